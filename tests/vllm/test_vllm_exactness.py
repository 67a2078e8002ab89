"""Greedy answers through vLLM (memory KV loaded by our connector) equal the transformers
engine's token for token, for the real default model over a needle stream, per preset."""

import pytest

from tests.vllm.conftest import both_answers, needle_stream

OPTIONS = {
    "full": None,
    "rekv": {"n_local": 48, "topk": 4},
    "sliding-window": {"n_local": 48},
    "hybrid": {"n_local": 48, "topk": 3, "memory_tokens": 96},
}
# the first test also starts vLLM (the session fixture): seconds idle, minutes on a busy machine
pytestmark = pytest.mark.timeout(1200)
MAX_TOKENS = 6


@pytest.mark.slow
@pytest.mark.parametrize("method", list(OPTIONS))
def test_vllm_answers_equal_transformers(vllm_engine, method: str) -> None:
    frames, questions = needle_stream(7001, minutes=0.25)
    session = vllm_engine.open_stream(f"exact-{method}", method=method, options=OPTIONS[method])
    try:
        for image, t in frames:
            session.push_frame(image, t)
        before = vllm_engine.answerer.questions
        for q in questions[:1]:
            remote, local = both_answers(vllm_engine, session, q["question"], MAX_TOKENS)
            assert remote.token_ids == local.token_ids, (method, q["question"], remote.text, local.text)
            assert remote.evidence == local.evidence
        assert vllm_engine.answerer.questions == before + 1  # vLLM answered them (no fallback)
        assert not vllm_engine.answerer.fallbacks
    finally:
        vllm_engine.close_stream(f"exact-{method}")


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
    finally:
        vllm_engine.close_stream("follow-up")
