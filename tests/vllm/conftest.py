"""One vLLM answer engine (a `.venv-vllm` process beside the real default model) for every test
here: starting vLLM costs tens of seconds on CPU. Skipped, with the reason, without `.venv-vllm`
(`bash tools/setup.sh --vllm`; `tools/test.sh` makes it)."""

import pytest

from streamvqa.answering.vllm_process import vllm_python
from streamvqa.synth.streams import needle_questions, random_stream, render_stream_frame

START_TIMEOUT_S = 600


@pytest.fixture(scope="session")
def vllm_engine():
    if vllm_python() is None:
        pytest.skip("no .venv-vllm: run `bash tools/setup.sh --vllm` (tools/test.sh does)")
    from streamvqa.engine import Engine, EngineConfig
    from tests.engine.conftest import get_adapter

    engine = Engine(EngineConfig(answer_engine="vllm", vllm={"max_num_seqs": 16, "max_model_len": 4096}),
                    adapter=get_adapter("default"))
    try:
        assert engine.answerer.process.wait_ready(START_TIMEOUT_S), "the vLLM answer process did not start"
        yield engine
    finally:
        engine.close()


def needle_stream(seed: int, minutes: float = 0.5):
    """Frames (1 fps) of a synthetic needle stream and its questions."""
    stream = random_stream(seed, minutes=minutes)
    frames = [(render_stream_frame(stream, i), i / stream.fps) for i in range(stream.n_frames)]
    return frames, needle_questions(stream)


def both_answers(engine, session, question: str, max_tokens: int):
    """The same question answered through vLLM, then by the transformers engine."""
    remote = session.answer(question, max_tokens=max_tokens)
    session.answerer = None
    try:
        local = session.answer(question, max_tokens=max_tokens)
    finally:
        session.answerer = engine.answerer
    return remote, local
