"""The memory machinery is exact: chunked = one-shot, exact mode = offline generate, and
re-rotated blocks = a direct prefill at the same positions (fp32, every family)."""

import torch
from transformers import DynamicCache

from streamvqa.engine import Engine
from streamvqa.engine.window import new_cache, place
from tests.engine.conftest import make_frames, reference_tokens

QUESTION = "What colour is the square?"


def full_session(adapter, n_frames=4, seed=0):
    session = Engine(adapter=adapter).open_stream("s", method="full")
    frames = make_frames(n_frames, seed)
    for image, t in frames:
        session.push_frame(image, t)
    return session, frames


def one_shot_pieces(adapter, frames, question):
    pieces = adapter.prefix_piece()
    for image, t in frames:
        pieces += adapter.unit_piece([image], t)
    return pieces, adapter.question_piece(question)


def assert_same_logits(reference: torch.Tensor, other: torch.Tensor) -> None:
    """Equal up to fp32 rounding, relative to the logits' scale: attention over a cache in
    chunks (or with RoPE tables at other positions) sums in another order, and over SmolLM2's
    30 layers that reaches ~1e-4 on logits of magnitude ~30 (4e-6 relative); tiny models ~1e-7."""
    scale = reference.abs().max().item()
    assert (reference - other).abs().max().item() < 1e-5 * scale
    assert torch.equal(reference.argmax(-1), other.argmax(-1))


@torch.inference_mode()
def test_chunked_encoding_equals_one_shot_prefill(adapter):
    session, frames = full_session(adapter)
    stream, q = one_shot_pieces(adapter, frames, QUESTION)
    tracker = adapter.new_positions()
    positions = tracker.place(stream + q)
    reference = adapter.forward(adapter.embed(stream + q), positions, DynamicCache(config=adapter.text_config))
    q_positions = session.tracker.fork(session.tracker.next).place(q)
    chunked = adapter.forward(adapter.embed(q), q_positions, session.window.cache)
    n = chunked.shape[1]
    assert torch.equal(positions[:, -n:], q_positions)
    assert_same_logits(reference[:, -n:], chunked)


@torch.inference_mode()
def test_exact_mode_equals_offline_generate(adapter):
    session, frames = full_session(adapter)
    answer = session.answer(QUESTION, max_tokens=8)
    expected = reference_tokens(adapter, frames, QUESTION, 8)
    assert answer.token_ids == expected
    assert answer.evidence == [(float(i), float(i)) for i in range(4)]


@torch.inference_mode()
def test_rerotated_blocks_equal_direct_prefill_at_those_positions(adapter):
    """Blocks stored before RoPE and placed at shifted positions give the logits of a prefill
    run directly at those positions (RoPE is relative, so the stored K/V are the same)."""
    session, frames = full_session(adapter)
    shift = 64
    stream, q = one_shot_pieces(adapter, frames, QUESTION)
    tracker = adapter.new_positions()
    positions = tracker.place(stream + q) + shift
    direct = adapter.forward(adapter.embed(stream + q), positions, DynamicCache(config=adapter.text_config))
    blocks = session.store.get_many("s", list(range(4)))
    keys, values = place(adapter, session.window.sink, [blocks] * adapter.n_layers, None,
                         positions=[b.positions for b in blocks], shift=shift)
    cache = new_cache(adapter, keys, values)
    placed = adapter.forward(adapter.embed(q), session.tracker.fork(session.tracker.next + shift).place(q), cache)
    n = placed.shape[1]
    assert_same_logits(direct[:, -n:], placed)


@torch.inference_mode()
def test_contiguous_layout_closes_gaps_and_matches_original_when_nothing_is_missing(adapter):
    session, _ = full_session(adapter)
    from streamvqa.engine.layout import contiguous, original

    blocks = session.store.get_many("s", [0, 1, 2, 3])
    start = session.window.sink.end
    assert [p.tolist() for p in contiguous(blocks, start)[0]] == [p.tolist() for p in original(blocks, start)[0]]
    picked = [blocks[0], blocks[2]]
    laid, end = contiguous(picked, start)
    assert end == start + blocks[0].extent + blocks[2].extent
    # each block moves as a whole: its internal structure (M-RoPE grids) is unchanged
    assert torch.equal(laid[1] - laid[1].min(), blocks[2].positions - blocks[2].positions.min())
    assert laid[1].min() == blocks[0].positions.min() + blocks[0].extent
