"""Resolve a model name to an adapter.

`--model` is one of: "default" (the embedded model), "tiny:<family>" (a tiny random model, built
once), a local Hugging Face directory, or a Hugging Face model id ("Qwen/Qwen3-VL-2B-Instruct").
An id is looked up in the huggingface_hub cache first; when it is not there it is downloaded,
unless this machine is offline (HF_HUB_OFFLINE=1, or the hub does not answer): then the error
says how to bring it here. A checkpoint whose architecture no adapter serves is refused before
any weight is read, with its name.
"""

from __future__ import annotations

import importlib
import json
import os
import re
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

# what a checkpoint directory needs beside config.json; nothing else is downloaded
HUB_FILES = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "tokenizer*"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ModelLoadError(ValueError):
    """The model cannot be served; `code` says why (docs/models.md)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def adapter_class(model_type: str, architecture: str = "") -> type[ModelAdapter]:
    if model_type not in FAMILIES:
        what = f"architecture {architecture} (model_type {model_type!r})" if architecture else f"model_type {model_type!r}"
        raise ModelLoadError(
            "model_unsupported",
            f"unsupported model: {what}; supported model types: {', '.join(sorted(FAMILIES))} (streamvqa models)",
        )
    module, name = FAMILIES[model_type]
    return getattr(importlib.import_module(module), name)


def tiny_dir(family: str) -> Path:
    """Build (once) and cache a tiny random model of `family`."""
    from streamvqa.models.tiny import FAMILIES as TINY
    from streamvqa.models.tiny import build_tiny

    if family not in TINY:
        raise ModelLoadError("model_unsupported", f"no tiny model {family!r}; one of {', '.join(TINY)}")
    out = cache_root() / "tiny" / family
    if not (out / "config.json").exists():
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        build_tiny(family, tmp)
        try:
            tmp.rename(out)
        except OSError:  # built concurrently by another process
            pass
    return out


def is_offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return env or bool(constants.HF_HUB_OFFLINE)


def _offline_error(repo_id: str, why: str) -> ModelLoadError:
    return ModelLoadError(
        "model_offline",
        f"model {repo_id!r} is not in the Hugging Face cache and {why}. On a machine that is online run "
        f"`hf download {repo_id}` and copy its cache (HF_HOME, default ~/.cache/huggingface) here, "
        "or pass --model a local directory holding the checkpoint (config.json and weights)",
    )


def resolve_hub_id(repo_id: str) -> Path:
    """The snapshot directory of a model id: from the cache, else downloaded when online."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    if is_offline():
        raise _offline_error(repo_id, "this machine is offline (HF_HUB_OFFLINE)")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except RepositoryNotFoundError:
        raise ModelLoadError("model_not_found", f"no model {repo_id!r} on the Hugging Face hub") from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError):
        raise _offline_error(repo_id, "the hub could not be reached") from None


def model_dir(name: str) -> Path:
    """The local checkpoint directory `name` refers to (tiny, local path or model id)."""
    if name.startswith("tiny:"):
        return tiny_dir(name.split(":", 1)[1])
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelLoadError("model_not_found", f"{name} is not a Hugging Face model directory (no config.json)")
        return path
    if _REPO_ID.match(name):
        return resolve_hub_id(name)
    raise ModelLoadError("model_not_found", f"no model at {name} (a local directory with config.json, or a model id)")


def checkpoint_type(path: Path) -> tuple[str, str]:
    """(model_type, first architecture) of a checkpoint directory."""
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        raise ModelLoadError("model_not_found", "the checkpoint's config.json is unreadable") from None
    archs = cfg.get("architectures") or [""]
    return str(cfg.get("model_type", "")), str(archs[0])


def load_adapter(name: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> ModelAdapter:
    if name == "default":
        from streamvqa.models.default import DefaultAdapter

        return DefaultAdapter.from_pretrained(ensure_smollm2(), device, dtype)
    path = model_dir(name)
    cls = adapter_class(*checkpoint_type(path))  # refused here, before any weight is read
    return cls.from_pretrained(path, device=device, dtype=dtype)
