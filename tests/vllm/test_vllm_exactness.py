"""Greedy answers through vLLM (memory KV loaded by our connector) equal the transformers
engine's token for token, for the real default model over a needle stream, per preset."""

import pytest

from tests.vllm.conftest import both_answers, needle_stream

# preset -> (options, whether vLLM serves it). A memory whose layers hold different numbers of
# tokens cannot be one vLLM token sequence: InfiniPot-V's compressed memory with demoted units
# brought back by ReKV (the hybrid before issue 22: a unit kept in part in some layers comes back
# whole in the layers that retrieve it) is answered by the transformers engine instead (counted as
# a fallback), the same answer. InfiniPot-V alone keeps the same count in every layer: vLLM serves it.
CASES = {
    "full": ("full", None, True),
    "rekv": ("rekv", {"n_local": 48, "topk": 4}, True),
    "sliding-window": ("sliding-window", {"n_local": 48}, True),
    "hybrid": ("hybrid", {"n_local": 48, "topk": 3}, True),
    "compressed": ("infinipot-v", {"memory_tokens": 96}, True),
    "compressed-retrieved": ("infinipot-v", {"n_local": 48, "encode_on": "window", "positions": "contiguous",
                                             "retrieval": "rekv", "memory_tokens": 96, "demote": True,
                                             "keep_memory": True, "topk": 3}, False),
}
# the first test also starts vLLM (the session fixture): seconds idle, minutes on a busy machine
pytestmark = pytest.mark.timeout(1200)
MAX_TOKENS = 6


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_vllm_answers_equal_transformers(vllm_engine, case: str) -> None:
    method, options, served = CASES[case]
    frames, questions = needle_stream(7001, minutes=0.25)
    session = vllm_engine.open_stream(f"exact-{case}", method=method, options=options)
    try:
        for image, t in frames:
            session.push_frame(image, t)
        before = vllm_engine.answerer.questions
        fallbacks = dict(vllm_engine.answerer.fallbacks)
        q = questions[0]
        remote, local = both_answers(vllm_engine, session, q["question"], MAX_TOKENS)
        assert remote.token_ids == local.token_ids, (case, q["question"], remote.text, local.text)
        assert remote.evidence == local.evidence
        if served:
            assert vllm_engine.answerer.questions == before + 1  # vLLM answered it
            assert vllm_engine.answerer.fallbacks == fallbacks
        else:
            assert vllm_engine.answerer.questions == before
            assert vllm_engine.answerer.fallbacks.get("ragged_layers", 0) == fallbacks.get("ragged_layers", 0) + 1
    finally:
        vllm_engine.close_stream(f"exact-{case}")


@pytest.mark.slow
def test_follow_up_reuses_vllm_prefix_cache_and_new_memory_does_not(vllm_engine) -> None:
    """The same memory gives the same placeholder ids (vLLM's prefix cache serves the follow-up);
    a new unit changes them, so vLLM never attends to stale KV: answers still match."""
    frames, questions = needle_stream(7002, minutes=0.25)
    session = vllm_engine.open_stream("follow-up", method="full")
    try:
        for image, t in frames[:-5]:
            session.push_frame(image, t)
        q = questions[0]["question"]
        first = both_answers(vllm_engine, session, q, MAX_TOKENS)
        again = both_answers(vllm_engine, session, q, MAX_TOKENS)
        for image, t in frames[-5:]:
            session.push_frame(image, t)
        later = both_answers(vllm_engine, session, q, MAX_TOKENS)
        for remote, local in (first, again, later):
            assert remote.token_ids == local.token_ids
        text = vllm_engine.answerer.process.metrics()
        assert "vllm:prefix_cache_hits" in text and "streamvqa_vllm_connector_tokens_loaded_total" in text
        # what the server's /metrics shows (Engine.collectors(), registered by the server)
        (collector,) = vllm_engine.collectors()
        names = {f.name for f in collector.collect()}
        assert {"vllm:prefix_cache_hits", "streamvqa_vllm_connector_tokens_loaded", "streamvqa_vllm_up"} <= names
    finally:
        vllm_engine.close_stream("follow-up")
