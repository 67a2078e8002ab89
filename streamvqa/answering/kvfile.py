"""The memory KV of one question, as a raw file in shared memory (`/dev/shm`), mapped on both sides.

Written by the server (our venv), read by the vLLM connector (`.venv-vllm`): torch only (both
environments have it). Layout: one C-contiguous array [layers, 2 (K, V), tokens, kv_heads,
head_dim] of the model's dtype, keys already rotated at the positions vLLM gives them (token i at
i). Tokens come before heads so that one layer's keys (or values) for a run of tokens are one
contiguous [tokens, heads, head_dim] slice: the very shape vLLM's cache-update op takes, so the
connector hands it views of the mapping and nothing is copied between the file and vLLM's cache.

The server fills the file through a shared mapping (`create`) before it sends the request, so
the connector, which maps it once the request arrives (`open_memory`), never sees it partial.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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
        return (self.layers, 2, self.tokens, self.heads, self.head_dim)

    @property
    def numel(self) -> int:
        return self.layers * 2 * self.tokens * self.heads * self.head_dim

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPES[self.dtype].itemsize


def create(spec: KVSpec) -> torch.Tensor:
    """A new file of `spec.nbytes` at `spec.path`, mapped shared and writable: what is written
    into the tensor is in the file (tmpfs pages: no write-back, the reader maps the same pages)."""
    fd = os.open(spec.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, spec.nbytes)
    finally:
        os.close(fd)
    return torch.from_file(spec.path, shared=True, size=spec.numel, dtype=DTYPES[spec.dtype]).view(spec.shape)


def open_memory(spec: KVSpec) -> torch.Tensor:
    """The file mapped privately (nothing is read until used, nothing is ever written back):
    [layers, 2, tokens, heads, head_dim]."""
    return torch.from_file(spec.path, shared=False, size=spec.numel, dtype=DTYPES[spec.dtype]).view(spec.shape)
