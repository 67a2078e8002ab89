"""`TieredStore`'s spill area: where a durable store puts an acknowledged block while no durable
tier takes it (Redis down), so writers never wait on the outage.

Files as on a disk tier (`DiskTier`, atomic rename), bounded by ``spill.budget_bytes`` (`put`
waits beyond it, `StoreFullError` after ``put_timeout_s``). The store's writer thread drains the
area into the durable tier when it answers again; a store opened after a crash re-indexes the
spilled blocks and drains them.

The durable put path lives here too (`_write_durable`: the first durable tier that takes the
block, else the spill area). A mixin of `TieredStore` (it works on the store's index, locks and
writer thread).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict

from streamvqa.store.config import DiskTierConfig
from streamvqa.store.errors import StoreError, StoreFullError
from streamvqa.store.keys import BlockKey
from streamvqa.store.tiers import DiskTier
from streamvqa.store.tiers.base import Data, data_len

SPILL = "spill"


class SpillMixin:
    def _init_spill(self) -> None:
        self._durable_tier: int | None = None
        if self.config.durable:
            self._durable_tier = next(i for i, t in enumerate(self.tiers) if t.durable)
        self._spill: DiskTier | None = None
        if self.config.spill is not None:
            sc = self.config.spill
            self._spill = DiskTier(DiskTierConfig(name=SPILL, path=sc.path, budget_bytes=sc.budget_bytes,
                                                  fsync=sc.fsync))
        self._spilled: OrderedDict[BlockKey, tuple[int, int]] = OrderedDict()  # key -> (gen, dst tier)
        self._spill_reserved = 0
        self._spill_lock = threading.Lock()  # a spill file's write/registration vs its removal
        self._spill_retry_at = 0.0
        self._down_until: dict[int, float] = {}  # durable tiers that just failed: spill, do not wait

    def _write_durable(self, key: BlockKey, data: Data, gen: int) -> int | str:
        """Write through to the first durable tier that accepts the block (a failing disk falls
        back to Redis and vice versa), else to the spill area; raises when nothing takes it, so
        the put is not acknowledged. With a spill area, a tier that failed within the last
        ``retry_backoff_s`` is not tried again on the put path (the worker probes it)."""
        err = "no durable tier fits it"
        now = time.monotonic()
        for i, tier in enumerate(self.tiers):
            if not tier.durable or data_len(data) > tier.budget_bytes:
                continue
            if self._spill is not None and self._down_until.get(i, 0.0) > now:
                continue
            try:
                self._write(i, key, data, gen, sync=True)
                self._down_until.pop(i, None)
                return i
            except (StoreError, OSError) as e:
                self._error(i, e)
                self._down_until[i] = time.monotonic() + self.config.write_behind.retry_backoff_s
                err = str(e)  # not the exception: its frames would keep the caller's block alive
        if self._spill is not None and self._durable_tier is not None:
            return self._spill_put(key, data, gen)
        raise StoreError(f"no durable tier accepted block {key.stream_id!r}#{key.index}: {err}")

    def _spill_put(self, key: BlockKey, data: Data, gen: int) -> str:
        """Write an acknowledged block to the spill area (waiting while it is full, up to
        ``put_timeout_s``); the worker moves it into the durable tier once that is back."""
        spill = self._spill
        assert spill is not None and self._durable_tier is not None
        size = data_len(data)
        if size > spill.budget_bytes:
            raise StoreError(f"block {key.stream_id!r}#{key.index} ({size} bytes) exceeds the spill budget")
        timeout = self.config.write_behind.put_timeout_s
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            waited = False
            while spill.nbytes() + self._spill_reserved + size > spill.budget_bytes:
                waited = True
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise StoreFullError(f"spill area full for {timeout}s ({len(self._spilled)} blocks)")
                self._cond.wait(0.1 if left is None else min(left, 0.1))
            self._spill_reserved += size
            if waited:
                self._stats.put_waits += 1
        try:
            with self._spill_lock:
                spill.put(key, data)
                with self._cond:
                    entry = self._index.get(key)
                    if entry is not None and entry.gen == gen:
                        self._spilled[key] = (gen, self._durable_tier)
                        self._spilled.move_to_end(key)
                        self._stats.spilled += 1
                        self._cond.notify_all()
                        return SPILL
                spill.delete(key)  # dropped or overwritten while we wrote
                raise StoreError(f"block {key.stream_id!r}#{key.index} was replaced while spilled")
        finally:
            with self._cond:
                self._spill_reserved -= size

    def _unspill(self, batch: int = 16) -> None:
        """Move up to `batch` spilled blocks into their durable tier (oldest first); on a failure
        wait ``retry_backoff_s`` before the next try."""
        spill = self._spill
        assert spill is not None
        with self._meta:
            todo = list(itertools.islice(self._spilled.items(), batch))
        for key, (gen, dst) in todo:
            data = spill.get(key)
            if data is None:
                self._confirm_gone(key, SPILL)
                continue
            try:
                self._write(dst, key, data, gen, sync=True)
            except (StoreError, OSError) as e:
                self._error(dst, e)
                with self._meta:
                    self._down_until[dst] = self._spill_retry_at = (
                        time.monotonic() + self.config.write_behind.retry_backoff_s
                    )
                return
            self._down_until.pop(dst, None)
            with self._spill_lock:
                with self._cond:
                    done = self._spilled.get(key) == (gen, dst)
                    if done:
                        self._spilled.pop(key)
                        self._stats.unspilled += 1
                    self._cond.notify_all()
                if done:
                    spill.delete(key)

    def _recover_spill(self, spill: DiskTier, dst: int) -> None:
        """Blocks acknowledged while the durable tier was down: indexed again and queued for it."""
        for key, size in list(spill.scan(self.fingerprint)):
            if key in self._index:  # the durable tier has it too: drained before the crash
                spill.delete(key)
                continue
            entry = self._read_index_entry(SPILL, key, size)
            if entry is None:
                continue
            self._index.add(key, entry)
            self._spilled[key] = (entry.gen, dst)
            self._stats.recovered += 1
