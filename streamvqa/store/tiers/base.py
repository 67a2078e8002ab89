"""The interface every tier implements.

A tier stores opaque encoded blocks (see `streamvqa.store.format`) under `BlockKey`s and counts
the bytes it holds. Policy (budgets, LRU, demotion, promotion) lives in `TieredStore`, never in
a tier, so tiers compose in any order.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from streamvqa.store.block import Block
from streamvqa.store.format import EncodedBlock, plan
from streamvqa.store.keys import BlockKey

Data = bytes | bytearray | memoryview | EncodedBlock


def as_data(key: BlockKey, data: Data | Block) -> Data:
    """Tiers also accept a `Block`: it is laid out (not yet copied) with the key's fingerprint."""
    return plan(data, key.fingerprint) if isinstance(data, Block) else data


def data_len(data: Data) -> int:
    return data.size if isinstance(data, EncodedBlock) else memoryview(data).nbytes


def as_buffer(data: Data) -> bytes | bytearray | memoryview:
    return data.to_bytes() if isinstance(data, EncodedBlock) else data


@runtime_checkable
class Tier(Protocol):
    name: str
    budget_bytes: int
    durable: bool  # survives a crash of the process that wrote it

    def put(self, key: BlockKey, data: Data | Block) -> int:
        """Store the whole block (encoded bytes, an `EncodedBlock` or a `Block`) (replacing any previous copy); returns bytes now held for it.
        Returns only when the bytes are complete in this tier."""

    def get(self, key: BlockKey) -> bytearray | bytes | None:
        """The encoded block, or None if absent. Not verified: callers decode with the checksum."""

    def get_many(self, keys: list[BlockKey]) -> list[bytearray | bytes | None]: ...

    def read(self, key: BlockKey, offset: int, length: int) -> bytes | None:
        """A byte range (shorter at the end of the block); used to rebuild the index cheaply."""

    def delete(self, key: BlockKey) -> bool: ...

    def contains(self, key: BlockKey) -> bool: ...

    def size_of(self, key: BlockKey) -> int | None: ...

    def nbytes(self) -> int:
        """Bytes this tier holds for blocks it knows (what budgets are checked against)."""

    def keys(self) -> list[BlockKey]: ...

    def scan(self, fingerprint: str, stream_id: str | None = None) -> Iterable[tuple[BlockKey, int]]:
        """Blocks of `fingerprint` (of one stream when given) present in the tier (key, size),
        oldest first where the tier knows ages. Empty for non-durable tiers."""

    def close(self) -> None: ...


class SizeLedger:
    """The bookkeeping every tier keeps: bytes held per block and their total, thread-safe.
    Tiers inherit `contains` / `size_of` / `nbytes` / `keys` from it and call `record` /
    `forget` when a copy is written or removed."""

    def __init__(self) -> None:
        self.sizes: dict[BlockKey, int] = {}
        self.total = 0
        self.ledger_lock = threading.Lock()

    def record(self, key: BlockKey, size: int) -> None:
        with self.ledger_lock:
            self.total += size - self.sizes.get(key, 0)
            self.sizes[key] = size

    def forget(self, keys: Iterable[BlockKey]) -> int:
        """Stop counting these blocks; returns how many were counted."""
        n = 0
        with self.ledger_lock:
            for key in keys:
                size = self.sizes.pop(key, None)
                if size is not None:
                    self.total -= size
                    n += 1
        return n

    def contains(self, key: BlockKey) -> bool:
        return key in self.sizes

    def size_of(self, key: BlockKey) -> int | None:
        return self.sizes.get(key)

    def nbytes(self) -> int:
        return self.total

    def keys(self) -> list[BlockKey]:
        with self.ledger_lock:
            return list(self.sizes)
