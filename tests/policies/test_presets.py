"""Presets: every method name resolves, options are validated at the edge, `streamvqa methods`
lists them, and with budgets above the stream size every lossless preset answers exactly as
`full` (exact mode) does."""

import json
import subprocess
import sys

import pytest

from streamvqa.engine import Engine, EngineError
from streamvqa.policies.presets import PRESETS, MethodError, describe, resolve
from tests.engine.conftest import get_adapter, make_frames

NAMES = ["full", "sliding-window", "rekv", "streamkv", "infinipot-v", "streammem", "livevlm", "streamingtom",
         "rlivs", "streamingvlm", "resv", "hybrid", "hybrid-kv"]

# budgets above the stream size; lossy stages (merges, quantization, captions) switched off
LOSSLESS = {
    "sliding-window": {"n_local": 100000},
    "rekv": {"topk": 1000},
    "streamkv": {"retention_options": {"kept_fraction": 1.0}, "summary": False, "topk": 1000, "local_blocks": 0},
    "infinipot-v": {"memory_tokens": 100000},
    "streammem": {"memory_tokens": 100000, "frame_filter": None, "unit_frames": 1},
    "livevlm": {"memory_tokens": 100000, "n_local": 100000, "retrieval": "all", "topk": None},
    "streamingvlm": {"retention_options": {"vision_window_s": 1e6}},
    "resv": {"memory_tokens": 100000, "n_local": 100000, "retention_options": {"threshold": 1.01}},
    "hybrid": {"memory_tokens": 100000, "n_local": 100000},
    "hybrid-kv": {"memory_tokens": 100000, "n_local": 100000},
}
QUESTION = "What colour is the square?"


def test_every_method_name_is_a_preset():
    assert set(NAMES) <= set(PRESETS)
    for name in NAMES:
        resolve(name)
    assert {d["name"] for d in describe()} >= set(NAMES)


def test_streamkv_exposes_a_kept_fraction():
    config = resolve("streamkv")
    assert config.retention_options == {} and config.retention_policy().options.kept_fraction == 0.6
    assert resolve("streamkv", {"retention_options": {"kept_fraction": 0.2}}).retention_policy().options.kept_fraction == 0.2


@pytest.mark.parametrize("options", [
    {"retention_options": {"compression_ratio": 0.6}},  # the code's name is refused: kept_fraction
    {"retention": "nope"},
    {"budget_bytes": {"gpu": 1}},
    {"budget_bytes": {"device": 0}},
    {"reduction_options": {"tokens": 0}},
    {"retention": "none", "encode_on": "memory"},
])
def test_bad_memory_options_are_refused(options):
    with pytest.raises(MethodError) as e:
        resolve("hybrid", options)
    assert e.value.code == "invalid_options"


def test_options_add_to_a_presets_dicts():
    config = resolve("streamingtom", {"reduction_options": {"tokens": 3}, "budget_bytes": {"memory": 1 << 20}})
    assert config.reducer().options.tokens == 3 and config.budget_bytes == {"memory": 1 << 20}


@pytest.mark.slow
def test_methods_command_lists_every_preset_as_json():
    out = subprocess.run([sys.executable, "-m", "streamvqa.cli", "methods", "--json"], capture_output=True, text=True,
                         check=True)
    listed = {p["name"]: p for p in json.loads(out.stdout)}
    assert set(NAMES) <= set(listed)
    assert listed["infinipot-v"]["policies"]["retention"] == "infinipot-v"


def test_engine_refuses_unknown_options():
    engine = Engine(adapter=get_adapter("tiny:smolvlm"))
    with pytest.raises(EngineError) as e:
        engine.open_stream("s", method="infinipot-v", options={"retention_options": {"alpha": 1}})
    assert e.value.code == "invalid_options"


@pytest.mark.parametrize("family", ["tiny:smolvlm", "tiny:qwen2_vl"])
def test_lossless_presets_answer_exactly_as_full_mode(family):
    adapter = get_adapter(family)
    frames = make_frames(6)
    reference = Engine(adapter=adapter).open_stream("s", method="full")
    for image, t in frames:
        reference.push_frame(image, t)
    expected = reference.answer(QUESTION, max_tokens=6)
    for method, options in LOSSLESS.items():
        session = Engine(adapter=adapter).open_stream("s", method=method, options=options)
        for image, t in frames:
            session.push_frame(image, t)
        answer = session.answer(QUESTION, max_tokens=6)
        assert answer.token_ids == expected.token_ids, method
        if method == "streamkv":  # units are segments: the same frames, coarser ranges
            assert answer.evidence[0][0] == 0.0 and answer.evidence[-1][1] == expected.evidence[-1][1]
        else:
            assert answer.evidence == expected.evidence, method


def test_a_small_budget_does_change_the_memory():
    """The exactness above is not vacuous: the same presets under a small budget keep less."""
    adapter = get_adapter("tiny:smolvlm")
    session = Engine(adapter=adapter).open_stream("s", method="infinipot-v", options={"memory_tokens": 20})
    for image, t in make_frames(6):
        session.push_frame(image, t)
    stats = session.stats()
    assert max(stats.memory_tokens) <= 20 and stats.tokens_evicted > 0
