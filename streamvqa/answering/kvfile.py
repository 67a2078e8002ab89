"""The memory KV of one question, as a raw file in shared memory (`/dev/shm`), mapped on both sides.

Written by the server (our venv), read by the vLLM connector (`.venv-vllm`): torch only (both
environments have it). Layout: one C-contiguous array [layers, 2 (K, V), tokens, kv_heads,
head_dim] of the model's dtype, keys already rotated at the positions vLLM gives them (token i at
i). Tokens come before heads so that one layer's keys (or values) for a run of tokens are one
contiguous [tokens, heads, head_dim] slice: the very shape vLLM's cache-update op takes, so the
connector hands it views of the mapping and nothing is copied between the file and vLLM's cache.

The server fills the file through a shared mapping before it sends the request, so the
connector, which maps it once the request arrives (`open_memory`), never sees it partial. The
server's files come from a `Pool`: each is created and mapped once and reused while its pages
stay allocated (a fresh tmpfs file costs a page fault and a zeroed page per 4 KiB written: three
times the copy itself, `streamvqa bench vllm-export`).
"""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

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


def create(path: str, nbytes: int) -> torch.Tensor:
    """A new file of `nbytes` at `path`, mapped shared and writable as bytes: what is written into
    the tensor is in the file (tmpfs pages: no write-back, a reader maps the same pages)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, nbytes)
    finally:
        os.close(fd)
    return torch.from_file(path, shared=True, size=nbytes, dtype=torch.uint8)


@dataclass
class Buffer:
    path: str
    data: torch.Tensor  # the whole file, mapped shared: uint8 [capacity]

    @property
    def capacity(self) -> int:
        return self.data.numel()

    def array(self, spec: KVSpec) -> torch.Tensor:
        """The first `spec.nbytes` as spec's array, to be filled."""
        return self.data[:spec.nbytes].view(DTYPES[spec.dtype]).view(spec.shape)


class Pool:
    """Mapped shared-memory files for the memories of questions in flight, reused.

    `acquire` hands out a free file at least as large (the smallest such), or makes one (its size
    rounded up to a power of two, so memories of similar lengths share files). `release` takes it
    back once the connector is done with it, or unlinks it when that is not known (a question
    that ended before vLLM computed it may still be loaded: its file must never be rewritten).
    At most `keep` free files stay."""

    def __init__(self, directory: str | Path, keep: int = 4) -> None:
        self.directory = Path(directory)
        self.keep = keep
        self._free: list[Buffer] = []
        self._lock = threading.Lock()

    def acquire(self, nbytes: int) -> Buffer:
        with self._lock:
            fits = [b for b in self._free if b.capacity >= nbytes]
            if fits:
                buf = min(fits, key=lambda b: b.capacity)
                self._free.remove(buf)
                return buf
        path = str(self.directory / f"{uuid.uuid4().hex}.kv")
        return Buffer(path, create(path, 1 << max(nbytes - 1, 0).bit_length()))

    def release(self, buf: Buffer, reusable: bool) -> None:
        with self._lock:
            if reusable:
                self._free.append(buf)
                if len(self._free) <= self.keep:
                    return
                buf = min(self._free, key=lambda b: b.capacity)  # keep the largest: they fit most
                self._free.remove(buf)
        _drop(buf)

    def close(self) -> None:
        with self._lock:
            free, self._free = self._free, []
        for buf in free:
            _drop(buf)


def _drop(buf: Buffer) -> None:
    buf.data = torch.empty(0, dtype=torch.uint8)  # unmapped once no view is left
    try:
        os.unlink(buf.path)
    except FileNotFoundError:
        pass


def open_memory(spec: KVSpec) -> torch.Tensor:
    """The file mapped privately (nothing is read until used, nothing is ever written back):
    [layers, 2, tokens, heads, head_dim]."""
    return torch.from_file(spec.path, shared=False, size=spec.numel, dtype=DTYPES[spec.dtype]).view(spec.shape)
