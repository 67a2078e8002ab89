"""Zero-copy reads of host-tier blocks from another process: descriptors and leases.

The store (owner of the host tier) hands a reader a `BlockDescriptor` per block: the shared-memory
segment name, offset and length of the encoded block, the block's generation, and a lease that
expires. While a lease is live the store does not evict the block for budget reasons (it may
still be deleted by an explicit `drop_stream` or overwrite). A reader maps the segment with
`map_block` (no copy through sockets, and no resource-tracker registration, so the reader's exit
never unlinks the owner's segment), uses the tensors, and closes the mapping before the lease ends.

Segments are never reused (one name per write), so a descriptor can never show another block's
bytes: a mapped segment stays valid until unmapped even if the store has meanwhile unlinked it.
Descriptors are plain data (`to_dict` / `from_dict`) to travel over any control channel.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from streamvqa.store import format as fmt
from streamvqa.store import shm
from streamvqa.store.block import Block
from streamvqa.store.errors import BlockNotFoundError, StoreError
from streamvqa.store.keys import BlockKey


class LeaseExpiredError(StoreError):
    """The descriptor's lease ended before the reader mapped the block."""


@dataclass(frozen=True)
class BlockDescriptor:
    stream_id: str
    index: int
    fingerprint: str
    segment: str
    offset: int
    length: int
    generation: int
    lease_id: str
    expires_at: float  # wall-clock seconds (time.time()) when the lease ends

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> BlockDescriptor:
        return cls(
            stream_id=str(d["stream_id"]),
            index=int(d["index"]),
            fingerprint=str(d["fingerprint"]),
            segment=str(d["segment"]),
            offset=int(d["offset"]),
            length=int(d["length"]),
            generation=int(d["generation"]),
            lease_id=str(d["lease_id"]),
            expires_at=float(d["expires_at"]),
        )


class LeaseTable:
    """Live leases by id and the blocks they pin; expiry is lazy (checked on every query)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._leases: dict[str, tuple[float, frozenset[BlockKey]]] = {}
        self._ids = itertools.count()

    def grant(self, keys: Iterable[BlockKey], ttl_s: float) -> tuple[str, float]:
        """A new lease on `keys`; returns (lease id, seconds until it expires)."""
        if ttl_s <= 0:
            raise ValueError("lease ttl must be positive")
        lease_id = f"{os.getpid()}-{next(self._ids)}"
        with self._lock:
            self._leases[lease_id] = (self.clock() + ttl_s, frozenset(keys))
        return lease_id, ttl_s

    def renew(self, lease_id: str, ttl_s: float) -> bool:
        with self._lock:
            self._prune()
            if lease_id not in self._leases:
                return False
            self._leases[lease_id] = (self.clock() + ttl_s, self._leases[lease_id][1])
            return True

    def release(self, lease_id: str) -> bool:
        with self._lock:
            return self._leases.pop(lease_id, None) is not None

    def pinned(self) -> set[BlockKey]:
        with self._lock:
            self._prune()
            out: set[BlockKey] = set()
            for _, keys in self._leases.values():
                out |= keys
            return out

    def is_leased(self, key: BlockKey) -> bool:
        return key in self.pinned()

    def active(self) -> int:
        with self._lock:
            self._prune()
            return len(self._leases)

    def _prune(self) -> None:
        now = self.clock()
        for lid in [lid for lid, (exp, _) in self._leases.items() if exp <= now]:
            del self._leases[lid]


class MappedBlock:
    """A block decoded zero-copy from another process's shared memory (reader side)."""

    def __init__(self, desc: BlockDescriptor, *, verify: bool = True) -> None:
        if time.time() >= desc.expires_at:
            raise LeaseExpiredError(f"lease {desc.lease_id} on {desc.stream_id!r}#{desc.index} has expired")
        try:
            self._seg = shm.attach_segment(desc.segment)
        except FileNotFoundError:
            raise BlockNotFoundError(
                f"segment {desc.segment} of {desc.stream_id!r}#{desc.index} is gone (dropped or overwritten)"
            ) from None
        self.descriptor = desc
        try:
            view = self._seg.buf[desc.offset : desc.offset + desc.length]
            self.block: Block | None = fmt.decode(
                view, expect_fingerprint=desc.fingerprint, copy=False, check=verify
            )
            del view
        except BaseException:
            shm.release_segment(self._seg, unlink=False)
            raise

    def close(self) -> None:
        """Unmap (once the tensors are no longer referenced elsewhere)."""
        self.block = None
        shm.release_segment(self._seg, unlink=False)

    def __enter__(self) -> MappedBlock:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def map_block(desc: BlockDescriptor | dict, *, verify: bool = True) -> MappedBlock:
    """Map a leased block (reader side). Use as a context manager; copy tensors you keep."""
    return MappedBlock(
        desc if isinstance(desc, BlockDescriptor) else BlockDescriptor.from_dict(desc), verify=verify
    )
