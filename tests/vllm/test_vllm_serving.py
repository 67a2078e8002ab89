"""Serving through vLLM: many questions in flight at once (continuous batching) answer what each
answers alone, and a `kill -9` of the vLLM process is `worker_unavailable` until it is back
(the server maps that code to 503, tests/server/test_contract.py), then answers again."""

import os
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest

from streamvqa.engine.errors import EngineError
from tests.vllm.conftest import START_TIMEOUT_S, needle_stream

# the first test also starts vLLM (the session fixture): seconds idle, minutes on a busy machine
pytestmark = pytest.mark.timeout(1200)
MAX_TOKENS = 6


@pytest.mark.slow
def test_sixteen_questions_over_four_streams_equal_the_transformers_answers(vllm_engine) -> None:
    sessions, asked = [], []
    try:
        for k in range(4):
            frames, questions = needle_stream(7010 + k, minutes=0.2)
            s = vllm_engine.open_stream(f"conc-{k}", method="rekv", options={"n_local": 48, "topk": 4})
            sessions.append(s)
            for image, t in frames:
                s.push_frame(image, t)
            asked += [(s, questions[i % len(questions)]["question"]) for i in range(4)]
        before = vllm_engine.answerer.questions
        with ThreadPoolExecutor(16) as pool:
            remote = list(pool.map(lambda a: a[0].answer(a[1], max_tokens=MAX_TOKENS), asked))
        assert vllm_engine.answerer.questions == before + 16
        for s in sessions:
            s.answerer = None
        local = [s.answer(q, max_tokens=MAX_TOKENS) for s, q in asked]
        for (_, q), r, ref in zip(asked, remote, local, strict=True):
            assert r.token_ids == ref.token_ids, (q, r.text, ref.text)
    finally:
        for k, s in enumerate(sessions):
            s.answerer = vllm_engine.answerer
            vllm_engine.close_stream(f"conc-{k}")


@pytest.mark.slow
def test_kill_9_is_worker_unavailable_then_answers_after_the_restart(vllm_engine) -> None:
    frames, questions = needle_stream(7020, minutes=0.2)
    session = vllm_engine.open_stream("kill", method="rekv", options={"n_local": 48, "topk": 4})
    try:
        for image, t in frames:
            session.push_frame(image, t)
        q = questions[0]["question"]
        before = session.answer(q, max_tokens=MAX_TOKENS)
        process = vllm_engine.answerer.process
        restarts = process.restarts
        proc = process.proc
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        with pytest.raises(EngineError) as err:
            session.answer(q, max_tokens=MAX_TOKENS)
        assert err.value.code == "worker_unavailable"
        assert process.wait_ready(START_TIMEOUT_S)
        assert process.restarts == restarts + 1
        assert session.answer(q, max_tokens=MAX_TOKENS).token_ids == before.token_ids
    finally:
        vllm_engine.close_stream("kill")
