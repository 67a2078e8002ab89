"""ReKV retrieval: per-layer top-k by the question's mean pre-RoPE query; window bounds."""

import asyncio

import pytest
import torch

from streamvqa.engine import Answer, Engine, EngineError, TokenEvent
from streamvqa.policies.retrieval import ReKVRetriever
from streamvqa.policies.retrieval.base import RetrievalContext
from tests.engine.conftest import make_frames


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_each_layer_picks_the_block_whose_keys_match_the_question(similarity):
    torch.manual_seed(0)
    layers, kv_heads, heads, d, n_blocks = 4, 2, 4, 8, 6
    query = torch.randn(layers, heads * d)
    rep = torch.randn(n_blocks, layers, kv_heads, d) * 0.1
    for layer in range(layers):
        target = (layer * 2 + 1) % n_blocks  # a different block per layer
        # GQA: kv head h serves query heads 2h and 2h+1; give it their mean direction
        q = query[layer].view(heads, d)
        rep[target, layer] = torch.stack([q[0] + q[1], q[2] + q[3]]) * 5
    ctx = RetrievalContext(query=query, rep_keys=rep, block_ids=[10, 11, 12, 13, 14, 15], window_ids=[15])
    picked = ReKVRetriever(topk=1, similarity=similarity).select(ctx)
    assert picked.per_layer == [[10 + (layer * 2 + 1) % n_blocks] for layer in range(layers)]
    assert picked.layer_share == {11: 0.5, 13: 0.25, 15: 0.25}  # layers 0 and 3 both pick block 11
    top2 = ReKVRetriever(topk=2, similarity=similarity).select(ctx)
    assert all(row == sorted(row) and len(row) == 2 for row in top2.per_layer)  # time order


def test_adaptive_budget_takes_few_blocks_when_one_stands_out_and_many_when_none_does():
    torch.manual_seed(1)
    layers, kv_heads, d, n_blocks = 3, 1, 8, 20
    query = torch.randn(layers, d)
    flat = torch.randn(n_blocks, layers, kv_heads, d) * 0.01  # no block is relevant
    peaked = flat.clone()
    peaked[7, :, 0] = query * 50  # one block matches in every layer
    retriever = ReKVRetriever(topk=12, score_mass=0.5, min_blocks=2, similarity="dot")
    ids = list(range(n_blocks))
    sharp = retriever.select(RetrievalContext(query, peaked, ids, []))
    broad = retriever.select(RetrievalContext(query, flat, ids, []))
    assert sharp.size == 2 and all(7 in row for row in sharp.per_layer)  # the floor
    assert broad.size > sharp.size and broad.size <= 12  # the ceiling


def test_rekv_session_retrieves_topk_blocks_per_layer(default_adapter):
    engine = Engine(adapter=default_adapter)
    session = engine.open_stream("s", method="rekv", options={"topk": 2, "n_local": 70})
    for image, t in make_frames(8):
        session.push_frame(image, t)
    # the window is bounded in tokens and positions; every unit stays in the store
    assert session.window.tokens <= 70
    assert session.window.next - session.window.sink.end == sum(b.extent for b in session.window.blocks)
    assert session.store.blocks_by_tier("s") == {"host": 8}
    answer = session.answer("What happened?", max_tokens=4)
    assert all(len(layer) == 2 and layer == sorted(layer) for layer in answer.blocks_per_layer)
    used = sorted({i for layer in answer.blocks_per_layer for i in layer})
    assert answer.evidence == [(float(i), float(i)) for i in used]
    # the question left the stream's window untouched
    assert session.window.cache.get_seq_length() == session.window.sink.n_tokens + session.window.tokens


def test_answer_at_time_only_uses_blocks_seen_by_then(default_adapter):
    session = Engine(adapter=default_adapter).open_stream("s", method="rekv", options={"topk": 3})
    for image, t in make_frames(6):
        session.push_frame(image, t)
    answer = session.answer("What happened?", max_tokens=2, at=2.0)
    assert max(t1 for _, t1 in answer.evidence) <= 2.0


def test_ask_streams_tokens_then_the_answer(default_adapter):
    session = Engine(adapter=default_adapter).open_stream("s", method="full")
    for image, t in make_frames(2):
        session.push_frame(image, t)

    async def collect():
        return [ev async for ev in session.ask("What is the capital of France?", max_tokens=12)]

    events = asyncio.run(collect())
    tokens, answer = events[:-1], events[-1]
    assert isinstance(answer, Answer) and all(isinstance(e, TokenEvent) for e in tokens)
    assert [e.token_id for e in tokens] == answer.token_ids
    assert "".join(e.text for e in tokens).strip() == answer.text
    assert set(answer.timings) >= {"queue_s", "retrieval_s", "prefill_s", "first_token_s", "total_s"}


def test_sampling_is_reproducible_with_a_seed(default_adapter):
    session = Engine(adapter=default_adapter).open_stream("s", method="full")
    for image, t in make_frames(2):
        session.push_frame(image, t)
    a = session.answer("Name a colour.", max_tokens=6, temperature=1.0, top_p=0.9, seed=3)
    b = session.answer("Name a colour.", max_tokens=6, temperature=1.0, top_p=0.9, seed=3)
    assert a.token_ids == b.token_ids


@pytest.mark.parametrize(
    ("method", "options", "code"),
    [("nope", None, "unknown_method"), ("rekv", {"topk": 0}, "invalid_options"), ("rekv", {"bogus": 1}, "invalid_options")],
)
def test_bad_methods_are_refused_with_stable_codes(default_adapter, method, options, code):
    with pytest.raises(EngineError) as e:
        Engine(adapter=default_adapter).open_stream("s", method=method, options=options)
    assert e.value.code == code


def test_bad_requests_are_refused_with_stable_codes(default_adapter):
    engine = Engine(adapter=default_adapter)
    session = engine.open_stream("s")
    with pytest.raises(EngineError) as e:
        session.answer("Anything?")
    assert e.value.code == "empty_stream"
    session.push_frame(*make_frames(1)[0])
    for kwargs, code in [
        ({"question": "x" * 5000}, "question_too_long"),
        ({"question": "  "}, "invalid_request"),
        ({"question": "ok", "max_tokens": 0}, "invalid_request"),
        ({"question": "ok", "top_p": 0.0}, "invalid_request"),
    ]:
        with pytest.raises(EngineError) as e:
            session.answer(**kwargs)
        assert e.value.code == code
    with pytest.raises(EngineError) as e:
        session.push_frame(make_frames(1)[0][0][:, :, :2], 1.0)
    assert e.value.code == "invalid_frame"
    with pytest.raises(EngineError) as e:
        engine.open_stream("s")
    assert e.value.code == "stream_exists"
    with pytest.raises(EngineError) as e:
        engine.get("missing")
    assert e.value.code == "unknown_stream"


def test_follow_up_reuses_the_answer_cache_until_the_stream_moves(default_adapter):
    session = Engine(adapter=default_adapter).open_stream("s", method="rekv", options={"topk": 2})
    for image, t in make_frames(5):
        session.push_frame(image, t)
    first = session.answer("What happened first?", max_tokens=5)
    again = session.answer("What happened first?", max_tokens=5)
    assert not first.reused_cache and again.reused_cache
    assert again.token_ids == first.token_ids  # the rolled-back cache is exactly the fresh one
    full = Engine(adapter=default_adapter).open_stream("f", method="full")
    for image, t in make_frames(3):
        full.push_frame(image, t)
    assert not full.answer("What happened?", max_tokens=2).reused_cache
    full.push_frame(*make_frames(4)[3])  # a new unit: every-block selection changes
    assert not full.answer("What happened?", max_tokens=2).reused_cache
    assert full.answer("What happened?", max_tokens=2).reused_cache
