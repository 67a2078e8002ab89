"""Tiny models of every family, built once per test session and loaded like real checkpoints."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

ADAPTERS = {
    "idefics3": ("streamvqa.models.idefics3", "Idefics3Adapter"),
    "smolvlm": ("streamvqa.models.idefics3", "Idefics3Adapter"),
    "qwen2_vl": ("streamvqa.models.qwen_vl", "QwenVLAdapter"),
    "qwen2_5_vl": ("streamvqa.models.qwen_vl", "QwenVLAdapter"),
    "qwen3_vl": ("streamvqa.models.qwen3_vl", "Qwen3VLAdapter"),
    "llava_onevision": ("streamvqa.models.llava_onevision", "LlavaOnevisionAdapter"),
}
FAMILIES = list(ADAPTERS)


def adapter_class(family: str):
    mod, name = ADAPTERS[family]
    try:
        return getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError):
        pytest.skip(f"{mod}.{name} not available")


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    from streamvqa.models.tiny import build_tiny

    cache: dict = {}

    def get(family: str):
        if family not in cache:
            cache[family] = build_tiny(family, tmp_path_factory.mktemp(family), seed=0)
        return cache[family]

    return get


@pytest.fixture(scope="session")
def adapters(tiny_dirs):
    cache: dict = {}

    def get(family: str):
        if family not in cache:
            cache[family] = adapter_class(family).from_pretrained(tiny_dirs(family))
        return cache[family]

    return get


def make_frames(n: int, seed: int = 0, shape=(48, 80, 3)) -> list[tuple[np.ndarray, float]]:
    """Random RGB frames of an odd size (adapters resize), one per second."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, shape, dtype=np.uint8), float(3 * i + 1)) for i in range(n)]


def stream_pieces(adapter, frames, question: str, unit_frames: int = 1):
    """prefix, one piece per unit, question: what the engine feeds."""
    from streamvqa.models.preprocess import group_units

    units = group_units(frames, unit_frames)
    return (
        [adapter.prefix_piece()]
        + [adapter.unit_piece(f, t) for f, t in units]
        + [adapter.question_piece(question)]
    )


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.inference_mode():
        yield
