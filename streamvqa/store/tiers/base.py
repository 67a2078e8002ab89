"""The interface every tier implements.

A tier stores opaque encoded blocks (see `streamvqa.store.format`) under `BlockKey`s and counts
the bytes it holds. Policy (budgets, LRU, demotion, promotion) lives in `TieredStore`, never in
a tier, so tiers compose in any order.
"""

from __future__ import annotations

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

    def scan(self, fingerprint: str) -> Iterable[tuple[BlockKey, int]]:
        """Blocks of `fingerprint` already present when the tier was opened (key, size), oldest
        first where the tier knows ages. Empty for non-durable tiers."""

    def close(self) -> None: ...
