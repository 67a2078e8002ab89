"""Stage 8 position strategies (contiguous, original, time-aware) and exact re-rotation.

For every strategy, on 1-D RoPE and on Qwen M-RoPE tiny models, the answer cache the engine
builds from stored pre-RoPE keys placed at the strategy's positions equals the cache (and the
question's logits) of a direct prefill of the same units at those positions.
"""

import dataclasses

import pytest
import torch
from transformers import DynamicCache

from streamvqa.engine import Engine
from streamvqa.engine.capture import Capture, capture
from streamvqa.engine.layout import LAYOUTS, contiguous, layout_for, original, time_aware
from streamvqa.engine.window import new_cache, place
from tests.engine.conftest import get_adapter, make_frames

QUESTION = "What colour is the square?"
SELECTED = [1, 3, 4]  # units 0 and 2 are skipped: the strategies differ on both gaps
STRATEGIES = {
    "contiguous": layout_for("contiguous"),
    "original": layout_for("original"),
    "time-aware": layout_for("time-aware", gap_scale=0.5, max_gap=7),
}
_streams: dict[str, tuple] = {}


def stream(name: str, n_frames: int = 6):
    """(adapter, session, frames) of a `full` stream, built once per family."""
    if name not in _streams:
        adapter = get_adapter(name)
        session = Engine(adapter=adapter).open_stream("s", method="full")
        frames = make_frames(n_frames, seed=3)
        for image, t in frames:
            session.push_frame(image, t)
        _streams[name] = (adapter, session, frames)
    return _streams[name]


def test_contiguous_and_original_are_the_two_ends_of_time_aware():
    adapter, session, _ = stream("tiny:qwen2_vl")
    blocks = session.store.get_many("s", SELECTED)
    start, now = session.window.sink.end, session.tracker.next
    c_pos, c_end = contiguous(blocks, start, now)
    o_pos, o_end = original(blocks, start, now)
    t_pos, t_end = time_aware(blocks, start, now, gap_scale=0.0)
    assert [p.tolist() for p in t_pos] == [p.tolist() for p in c_pos] and t_end == c_end
    t_pos, t_end = time_aware(blocks, start, now, gap_scale=1.0, max_gap=None)
    assert [p.tolist() for p in t_pos] == [p.tolist() for p in o_pos] and t_end == o_end == now
    # contiguous closes the gaps; original keeps the stream positions
    assert c_end == start + sum(b.extent for b in blocks)
    assert all(torch.equal(p, b.positions) for p, b in zip(o_pos, blocks, strict=True))


def test_time_aware_gaps_are_compressed_monotone_and_bounded():
    _, session, _ = stream("tiny:smolvlm")
    blocks = session.store.get_many("s", SELECTED)
    start, now = session.window.sink.end, session.tracker.next
    extent = blocks[0].extent
    positions, end = time_aware(blocks, start, now, gap_scale=0.5, max_gap=7)
    starts = [int(p.min()) for p in positions]
    # unit 0 skipped before unit 1: gap round(0.5 * extent) capped at 7; unit 2 skipped likewise;
    # 3 -> 4 adjacent: no gap; after unit 4 the stream ends (unit 5 skipped): one more gap
    g = min(7, round(0.5 * extent))
    assert starts == [start + g, start + g + extent + g, start + g + 2 * extent + g]
    assert end == starts[-1] + extent + g
    # each block moves as a whole (M-RoPE grids and text offsets inside it are unchanged)
    for p, b in zip(positions, blocks, strict=True):
        assert torch.equal(p - p.min(), b.positions - b.positions.min())
    # unbounded gaps would be the original layout; the cap keeps the span short
    assert end - start < now - start


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("family", ["tiny:smolvlm", "tiny:qwen2_vl", "tiny:qwen2_5_vl"])
@torch.inference_mode()
def test_placed_blocks_equal_a_direct_prefill_at_the_strategy_positions(family, strategy):
    adapter, session, frames = stream(family)
    sink = session.window.sink
    blocks = session.store.get_many("s", SELECTED)
    positions, end = STRATEGIES[strategy](blocks, sink.end, session.tracker.next)
    assert strategy == "original" or end < session.tracker.next  # the gaps really moved the blocks

    # direct: the prefix, then each selected unit prefilled at its laid-out positions (1 or 3 rows)
    direct = DynamicCache(config=adapter.text_config)
    adapter.forward(adapter.embed(adapter.prefix_piece()), sink.positions, direct, logits="none")
    captured = []
    for b, pos in zip(blocks, positions, strict=True):
        image, t = frames[b.index]
        with capture(adapter.attention_layers()) as cap:
            adapter.forward(adapter.embed(adapter.unit_piece([image], t)), pos, direct, logits="none")
        d = adapter.head_dim
        # the same unit's pre-RoPE K/V, stored like a block (at its *stream* positions)
        captured.append(dataclasses.replace(
            b, keys=torch.stack([Capture.heads(k, d) for k in cap.k]),
            values=torch.stack([Capture.heads(v, d) for v in cap.v]),
        ))

    # re-rotation: the engine's placement of those blocks at the strategy's positions
    keys, values = place(adapter, sink, [captured] * adapter.n_layers, None, positions=positions)
    placed = new_cache(adapter, keys, values)
    for layer in range(adapter.n_layers):
        k_ref, v_ref = direct.layers[layer].keys, direct.layers[layer].values
        assert placed.layers[layer].keys.shape == k_ref.shape
        assert (placed.layers[layer].keys - k_ref).abs().max().item() < 1e-5
        assert (placed.layers[layer].values - v_ref).abs().max().item() < 1e-6

    q = adapter.question_piece(QUESTION)
    q_pos = session.tracker.fork(end).place(q)
    expected = adapter.forward(adapter.embed(q), q_pos, direct)
    got = adapter.forward(adapter.embed(q), q_pos, placed)
    assert (expected - got).abs().max().item() < 1e-4
    assert torch.equal(expected.argmax(-1), got.argmax(-1))


@torch.inference_mode()
def test_sessions_answer_with_every_strategy_and_time_aware_spans_between_the_others():
    adapter = get_adapter("tiny:qwen2_5_vl")
    frames = make_frames(8, seed=5)
    answers, ends = {}, {}
    for name, extra in [("contiguous", {}), ("original", {}), ("time-aware", {}),
                        ("tight", {"time_gap_scale": 0.0}), ("loose", {"time_gap_scale": 1.0, "time_max_gap": None})]:
        positions = name if name in LAYOUTS else "time-aware"
        session = Engine(adapter=adapter).open_stream("s", method="rekv", options={
            "topk": 2, "n_local": 40, "positions": positions, **extra})
        for image, t in frames:
            session.push_frame(image, t)
        answers[name] = session.answer(QUESTION, max_tokens=4)
        ends[name] = session.answer_cache.end
    # time-aware with no gap kept is contiguous; with every gap kept it is original
    assert answers["tight"].token_ids == answers["contiguous"].token_ids and ends["tight"] == ends["contiguous"]
    assert answers["loose"].token_ids == answers["original"].token_ids
    assert ends["contiguous"] <= ends["time-aware"] <= ends["loose"]
    assert all(a.blocks_per_layer == answers["contiguous"].blocks_per_layer for a in answers.values())
