import numpy as np
import pytest
import torch

from streamvqa.models.loading import load_adapter

# The embedded default (real SmolLM2 + vision tower) and a tiny random model of every family.
FAMILIES = ["default", "tiny:smolvlm", "tiny:idefics3", "tiny:qwen2_vl", "tiny:qwen2_5_vl", "tiny:qwen3_vl",
            "tiny:llava_onevision"]

_cache: dict[str, object] = {}


def get_adapter(name: str):
    if name not in _cache:
        torch.manual_seed(0)
        _cache[name] = load_adapter(name)
    return _cache[name]


@pytest.fixture(params=FAMILIES)
def adapter(request):
    return get_adapter(request.param)


@pytest.fixture
def default_adapter():
    return get_adapter("default")


def make_frames(n: int, seed: int = 0, size: int = 64) -> list[tuple[np.ndarray, float]]:
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), float(i)) for i in range(n)]


def reference_tokens(adapter, frames, question: str, max_new_tokens: int) -> list[int]:
    """Greedy tokens of the model's own offline generate over the whole sequence, up to EOS."""
    inputs = adapter.reference_inputs(frames, question)
    out = adapter.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:] if "input_ids" in inputs else out[0]
    tokens = []
    for tok in new.tolist():
        if tok in adapter.eos_ids:
            break
        tokens.append(tok)
    return tokens
