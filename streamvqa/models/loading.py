"""Resolve a model name to an adapter: "default", "tiny:<family>", or a local HF directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from streamvqa.models.base import ModelAdapter
from streamvqa.models.smollm2 import cache_root, ensure_smollm2

FAMILIES = {
    "qwen2_vl": ("streamvqa.models.qwen_vl", "QwenVLAdapter"),
    "qwen2_5_vl": ("streamvqa.models.qwen_vl", "QwenVLAdapter"),
    "qwen3_vl": ("streamvqa.models.qwen3_vl", "Qwen3VLAdapter"),
    "llava_onevision": ("streamvqa.models.llava_onevision", "LlavaOnevisionAdapter"),
    "idefics3": ("streamvqa.models.idefics3", "Idefics3Adapter"),
    "smolvlm": ("streamvqa.models.idefics3", "Idefics3Adapter"),
    "llama": ("streamvqa.models.default", "DefaultAdapter"),
}


class ModelLoadError(ValueError):
    code = "model_unavailable"


def adapter_class(model_type: str) -> type[ModelAdapter]:
    import importlib

    if model_type not in FAMILIES:
        raise ModelLoadError(f"unsupported model type {model_type!r}; supported: {', '.join(sorted(FAMILIES))}")
    module, name = FAMILIES[model_type]
    return getattr(importlib.import_module(module), name)


def tiny_dir(family: str) -> Path:
    """Build (once) and cache a tiny random model of `family`."""
    from streamvqa.models.tiny import build_tiny

    out = cache_root() / "tiny" / family
    if not (out / "config.json").exists():
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        build_tiny(family, tmp)
        try:
            tmp.rename(out)
        except OSError:  # built concurrently by another process
            pass
    return out


def load_adapter(name: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> ModelAdapter:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if name == "default":
        from streamvqa.models.default import DefaultAdapter

        return DefaultAdapter.from_pretrained(ensure_smollm2(), device, dtype)
    path = tiny_dir(name.split(":", 1)[1]) if name.startswith("tiny:") else Path(name)
    config = path / "config.json"
    if not config.exists():
        raise ModelLoadError(f"no model at {path} (expected a Hugging Face directory with config.json)")
    model_type = json.loads(config.read_text()).get("model_type", "")
    return adapter_class(model_type).from_pretrained(path, device=device, dtype=dtype)
