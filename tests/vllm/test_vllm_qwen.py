"""M-RoPE through vLLM: greedy answers of a tiny Qwen2-VL / Qwen2.5-VL (head_dim 64) through vLLM,
its language model exported as a plain Qwen2, equal the transformers engine's token for token
over a stream, per preset. The memory's keys carry 3-D positions (vision grids) and the question
sits at the tracker's `end`, not at the memory's length: the engine shifts every key by
``length - end`` in all three rows, which these tests see non-zero."""

import pytest

from streamvqa.answering import vllm_engine as ve
from tests.vllm.conftest import START_TIMEOUT_S, both_answers, needle_stream, tiny_qwen_dir

CASES = {
    "full": ("full", None),
    "rekv": ("rekv", {"n_local": 48, "topk": 4}),
    "sliding-window": ("sliding-window", {"n_local": 48}),
}
# each family starts its own vLLM process: tens of seconds idle, minutes on a busy machine
pytestmark = pytest.mark.timeout(1200)
MAX_TOKENS = 12


@pytest.fixture(scope="module", params=["qwen2_vl", "qwen2_5_vl"])
def qwen_engine(request, tmp_path_factory):
    from streamvqa.answering.vllm_process import vllm_python

    if vllm_python() is None:
        pytest.skip("no .venv-vllm: run `bash tools/setup.sh --vllm` (tools/test.sh does)")
    from streamvqa.engine import Engine, EngineConfig
    from streamvqa.models.loading import load_adapter

    adapter = load_adapter(str(tiny_qwen_dir(request.param, tmp_path_factory.mktemp(request.param))))
    engine = Engine(EngineConfig(answer_engine="vllm", vllm={"max_num_seqs": 4, "max_model_len": 4096,
                                                              "kv_cache_gib": 1}), adapter=adapter)
    try:
        assert engine.answerer.process.wait_ready(START_TIMEOUT_S), "the vLLM answer process did not start"
        yield engine
    finally:
        engine.close()


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_qwen_answers_through_vllm_equal_transformers(qwen_engine, case: str, monkeypatch) -> None:
    shifts = []

    def spy(adapter, cache, length, shift, rows, spec):
        shifts.append((shift, rows))
        return export(adapter, cache, length, shift, rows, spec)

    export = ve.export_memory
    monkeypatch.setattr(ve, "export_memory", spy)
    method, options = CASES[case]
    frames, questions = needle_stream(7101, minutes=0.25)
    session = qwen_engine.open_stream(f"qwen-{case}", method=method, options=options)
    try:
        for image, t in frames:
            session.push_frame(image, t)
        before = qwen_engine.answerer.questions
        for q in questions[:2]:
            remote, local = both_answers(qwen_engine, session, q["question"], MAX_TOKENS)
            assert remote.token_ids == local.token_ids, (case, q["question"], remote.text, local.text)
            assert remote.evidence == local.evidence
        assert qwen_engine.answerer.questions == before + 2  # vLLM answered both
        # M-RoPE rows, and a real shift: a 2 x 3 vision block is 6 tokens but advances positions by 3
        assert shifts and all(rows == 3 and shift != 0 for shift, rows in shifts)
    finally:
        qwen_engine.close_stream(f"qwen-{case}")


@pytest.mark.slow
def test_a_memory_exported_without_its_shift_changes_the_answer(qwen_engine, monkeypatch) -> None:
    """The control of the test above: keys left at their M-RoPE positions while vLLM puts the
    question at the memory's length give other tokens, so equality there is the shift's doing."""
    export = ve.export_memory
    monkeypatch.setattr(ve, "export_memory", lambda a, c, n, shift, rows, spec: export(a, c, n, 0, rows, spec))
    frames, questions = needle_stream(7101, minutes=0.25)
    session = qwen_engine.open_stream("qwen-unshifted", method="full")
    try:
        for image, t in frames:
            session.push_frame(image, t)
        remote, local = both_answers(qwen_engine, session, questions[0]["question"], MAX_TOKENS)
        assert remote.token_ids != local.token_ids
    finally:
        qwen_engine.close_stream("qwen-unshifted")
