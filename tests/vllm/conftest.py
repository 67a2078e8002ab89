"""One vLLM answer engine (a `.venv-vllm` process beside the real default model) for every test
here: starting vLLM costs tens of seconds on CPU. Skipped, with the reason, without `.venv-vllm`
(`bash tools/setup.sh --vllm`; `tools/test.sh` makes it)."""

from pathlib import Path

import pytest
import torch

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


def tiny_qwen_dir(family: str, out: Path) -> Path:
    """A tiny random Qwen2-VL / Qwen2.5-VL (the tests' tiny config) with head_dim 64, the smallest
    head vLLM's CPU attention takes (it rejects the tiny models' 16): hidden 128, 2 query heads,
    1 KV head, M-RoPE sections [8, 12, 12] (published [16, 24, 24] halved). Qwen2.5-VL's
    embeddings are tied (as Qwen2.5-VL-3B's are), Qwen2-VL's not: both exports are covered.
    Weights drawn wider than the usual 0.02 (0.15): attention is then sharp enough that answers
    depend on the question, the memory and its positions (at 0.02 every answer was the same
    tokens, and a memory exported without its shift answered alike: a test that cannot fail)."""
    from transformers import AutoModelForImageTextToText

    from streamvqa.models.tiny import tiny_config
    from streamvqa.models.tokenizer import build_tokenizer

    tok = build_tokenizer()
    cfg = tiny_config(family, tok)
    tc = cfg.text_config
    tc.hidden_size, tc.num_attention_heads, tc.num_key_value_heads = 128, 2, 1
    cfg.initializer_range = tc.initializer_range = 0.15
    tc.rope_parameters["mrope_section"] = [8, 12, 12]
    if family == "qwen2_vl":
        cfg.vision_config.hidden_size = 128  # the merger's output: the LM's width
    else:
        cfg.vision_config.out_hidden_size = 128
        cfg.tie_word_embeddings = tc.tie_word_embeddings = True
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(cfg).eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
