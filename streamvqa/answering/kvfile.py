"""The memory KV of one question, as a raw file in shared memory (`/dev/shm`).

Written by the server (our venv), read by the vLLM connector (`.venv-vllm`): numpy only, so both
sides import it. Layout: one C-contiguous array [layers, 2 (K, V), kv_heads, tokens, head_dim]
of the model's dtype, keys already rotated at the positions vLLM gives them (token i at i).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np

DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": None}  # bfloat16: raw uint16 bits


@dataclass(frozen=True)
class KVSpec:
    """Where a question's memory KV lies and its shape; travels in vLLM's kv_transfer_params."""

    path: str
    layers: int
    heads: int
    tokens: int
    head_dim: int
    dtype: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> KVSpec:
        return cls(**{k: d[k] for k in ("path", "layers", "heads", "tokens", "head_dim", "dtype")})

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return (self.layers, 2, self.heads, self.tokens, self.head_dim)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * (2 if self.dtype in ("float16", "bfloat16") else 4)


def write(path: str, array: np.ndarray) -> None:
    """Write atomically (a reader never sees a partial file)."""
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(memoryview(np.ascontiguousarray(array)).cast("B"))
    os.replace(tmp, path)


def open_array(spec: KVSpec) -> np.ndarray:
    """A read-only memory map of the file: [layers, 2, heads, tokens, head_dim]; bfloat16 as uint16."""
    dt = DTYPES[spec.dtype] or np.uint16
    return np.memmap(spec.path, dtype=dt, mode="r", shape=spec.shape)
