"""Every preset runs on Qwen3-VL (DeepStack embeddings go through unit merges, token reduction,
frame filters and retention), and with budgets above the stream size the lossless presets
answer exactly as `full` (exact mode) does."""

import pytest
import torch

from streamvqa.engine import Engine
from streamvqa.policies.presets import PRESETS
from tests.engine.conftest import get_adapter, make_frames

QUESTION = "What colour is the square?"
FAMILY = "tiny:qwen3_vl"
# small windows and budgets so the lossy stages really act on an 8-frame stream
SMALL = {
    "sliding-window": {"n_local": 40},
    "rekv": {"n_local": 40, "topk": 2},
    "streamkv": {"min_segment": 2, "max_segment": 4, "segment_theta": 0.9999},
    "infinipot-v": {"memory_tokens": 40},
    "streammem": {"memory_tokens": 40, "unit_frames": 2, "frame_filter": 0.5},
    "livevlm": {"memory_tokens": 40, "n_local": 40, "retention_options": {"short_term": 16}},
    "streamingtom": {"n_local": 40, "reduction_options": {"tokens": 3}},
    "streamingvlm": {"retention_options": {"vision_window_s": 6, "text_sink": 8, "text_window": 8}},
    "resv": {"memory_tokens": 40},
    "rlivs": {"unit_frames": 4, "retention_options": {"caption_tokens": 2}},
    "hybrid": {"memory_tokens": 40, "n_local": 40},
}
LOSSLESS = {
    "sliding-window": {"n_local": 100000},
    "rekv": {"topk": 1000},
    "infinipot-v": {"memory_tokens": 100000},
    "streammem": {"memory_tokens": 100000, "frame_filter": None, "unit_frames": 1},
    "resv": {"memory_tokens": 100000, "n_local": 100000, "retention_options": {"threshold": 1.01}},
    "hybrid": {"memory_tokens": 100000, "n_local": 100000},
}


def run(method: str, options: dict, n: int):
    session = Engine(adapter=get_adapter(FAMILY)).open_stream("s", method=method, options=options)
    for image, t in make_frames(n, seed=5):
        session.push_frame(image, t)
    return session, session.answer(QUESTION, max_tokens=4)


@pytest.mark.parametrize("method", [m for m in PRESETS if m != "rekv-external"])  # needs an encoder dir
@torch.inference_mode()
def test_every_preset_runs(method):
    session, answer = run(method, SMALL.get(method, {}), 8)
    assert session.stats().frames_encoded == 8
    assert answer.token_ids and answer.evidence


@torch.inference_mode()
def test_lossless_presets_answer_exactly_as_full_mode():
    _, expected = run("full", {}, 6)
    for method, options in LOSSLESS.items():
        _, answer = run(method, options, 6)
        assert answer.token_ids == expected.token_ids, method
        assert answer.evidence == expected.evidence, method
