"""Warm tier: host RAM in POSIX shared memory, one segment per block.

One segment per block (not an arena): blocks differ in size (summary units, pruned blocks), and a
segment per block needs no allocator, never fragments, returns memory to the OS the moment a block
is demoted, and gives a reader in another process exactly one block to map and lease. The cost is
a shm_open + ftruncate + mmap per block (tens of µs against ~ms to fill a MiB-sized block) and
one mapping per block (far below vm.max_map_count at MiB-sized blocks). File descriptors are
closed right after mapping, so ulimit -n does not bound the number of blocks.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from multiprocessing import shared_memory

from streamvqa.store import shm
from streamvqa.store.block import Block
from streamvqa.store.config import HostTierConfig
from streamvqa.store.format import EncodedBlock
from streamvqa.store.keys import BlockKey
from streamvqa.store.tiers.base import Data, SizeLedger, as_data, data_len


@dataclass(frozen=True)
class SegmentRef:
    """Where a block's bytes live: enough for another process to map them."""

    name: str
    offset: int
    length: int


class HostTier(SizeLedger):
    durable = False

    def __init__(self, config: HostTierConfig) -> None:
        super().__init__()
        self.config = config
        self.name = config.name
        self.budget_bytes = config.budget_bytes
        self._segments: dict[BlockKey, tuple[shared_memory.SharedMemory, int]] = {}
        self._lock = threading.Lock()
        # Unlink whatever is left if the tier is garbage-collected or the interpreter exits
        # without close() (a SIGKILL still leaves segments: that is the janitor's job).
        self._finalizer = weakref.finalize(self, _release_all, self._segments)

    def put(self, key: BlockKey, data: Data | Block) -> int:
        data = as_data(key, data)
        size = data_len(data)
        seg = shm.create_segment(shm.new_segment_name(self.config.shm_prefix), size)
        try:
            if isinstance(data, EncodedBlock):
                data.write_into(seg.buf)
            else:
                seg.buf[:size] = memoryview(data).cast("B")
        except BaseException:
            shm.release_segment(seg, unlink=True)
            raise
        with self._lock:
            old = self._segments.pop(key, None)
            self._segments[key] = (seg, size)
            self.record(key, size)
        if old:
            shm.release_segment(old[0], unlink=True)
        return size

    def get(self, key: BlockKey) -> bytearray | None:
        with self._lock:
            entry = self._segments.get(key)
            if entry is None:
                return None
            seg, size = entry
            return bytearray(seg.buf[:size])  # the one copy; decode then aliases it

    def get_many(self, keys: list[BlockKey]) -> list[bytearray | None]:
        return [self.get(k) for k in keys]

    def read(self, key: BlockKey, offset: int, length: int) -> bytes | None:
        with self._lock:
            entry = self._segments.get(key)
            if entry is None:
                return None
            seg, size = entry
            return bytes(seg.buf[offset : min(size, offset + length)])

    def segment(self, key: BlockKey) -> SegmentRef | None:
        """The segment holding `key`, for zero-copy readers (see `streamvqa.store.leases`)."""
        with self._lock:
            entry = self._segments.get(key)
            return SegmentRef(entry[0].name, 0, entry[1]) if entry else None

    def delete(self, key: BlockKey) -> bool:
        with self._lock:
            entry = self._segments.pop(key, None)
            if entry is None:
                return False
            self.forget([key])
        shm.release_segment(entry[0], unlink=True)
        return True

    def scan(self, fingerprint: str, stream_id: str | None = None) -> Iterable[tuple[BlockKey, int]]:
        return []  # host RAM does not survive its process

    def close(self) -> None:
        with self._lock:
            self.forget(list(self.sizes))
            self._finalizer()  # releases and clears self._segments in place


def _release_all(segments: dict[BlockKey, tuple[shared_memory.SharedMemory, int]]) -> None:
    items = list(segments.values())
    segments.clear()
    for seg, _ in items:
        shm.release_segment(seg, unlink=True)
