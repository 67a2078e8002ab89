"""`TieredStore`'s promotion: blocks read from a colder tier are copied back into the warmest
tier (`get_many`, ``promote_on_get``), and `prefetch` does the same in the background for blocks
retrieval is about to need. A promotion never waits on the cold tier: it is skipped while the
write-behind area is full (``promotions_skipped``), and its victims are staged.

A mixin of `TieredStore` (it works on the store's index, budgets and writer thread).
"""

from __future__ import annotations

from collections import deque

from streamvqa.store.errors import StoreError
from streamvqa.store.keys import BlockKey
from streamvqa.store.tiers.base import Data, data_len


class PrefetchQueue:
    """Blocks to promote in the background, each once. Guarded by the store's metadata lock."""

    def __init__(self) -> None:
        self._queue: deque[BlockKey] = deque()
        self._queued: set[BlockKey] = set()

    def __len__(self) -> int:
        return len(self._queue)

    def push(self, key: BlockKey) -> bool:
        if key in self._queued:
            return False
        self._queue.append(key)
        self._queued.add(key)
        return True

    def pop(self) -> BlockKey | None:
        if not self._queue:
            return None
        key = self._queue.popleft()
        self._queued.discard(key)
        return key


class PromotionMixin:
    def prefetch(self, stream_id: str, indices: list[int]) -> int:
        """Start promoting cold blocks into the warmest tier in the background; returns how many
        were queued (blocks already warm or unknown are skipped)."""
        self._check_open()
        queued = 0
        with self._cond:
            for i in indices:
                key = self.key(stream_id, i)
                entry = self._index.get(key)
                if entry is None or 0 in entry.tiers:
                    continue
                queued += self._prefetch.push(key)
            self._stats.prefetch_requested += queued
            if queued:
                self._cond.notify_all()
        return queued

    def _promote(self, key: BlockKey, data: Data, gen: int) -> None:
        """Copy a block read from a colder tier into tier 0 (victims staged, never waited on)."""
        on_worker = self._on_writer()
        with self._meta:
            entry = self._index.get(key)
            if entry is None or entry.gen != gen or 0 in entry.tiers:
                return
            if not on_worker and self._staging.full(self.config.write_behind):
                self._stats.promotions_skipped += 1
                return
        if data_len(data) > self.tiers[0].budget_bytes:
            return
        try:
            self._write(0, key, data, gen, sync=on_worker)
        except (StoreError, OSError) as e:
            self._error(0, e)
            return
        with self._meta:
            self._stats.promotions += 1

    def _do_prefetch(self, key: BlockKey) -> None:
        with self._meta:
            entry = self._index.get(key)
            if entry is None or 0 in entry.tiers:
                return
        try:
            data = self._read_raw(key, entry)
        except StoreError:
            return
        self._promote(key, data, entry.gen)
        with self._meta:
            self._stats.prefetched += 1
