"""`TieredStore`'s write-behind: victims of a warm tier do not wait for the cold tier on the put
path. Their bytes go to a bounded staging area (``pending``, still readable) drained by one
writer thread; `put` waits only while that area is full (``write_behind.max_items`` /
``max_bytes``). The same thread runs prefetches and drains the spill area.

`StagingArea` is the bookkeeping; `WriteBehindMixin` the policy and the thread, a mixin of
`TieredStore` (it works on the store's index, locks and tiers).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from streamvqa.store.config import WriteBehindConfig
from streamvqa.store.errors import StoreError, StoreFullError
from streamvqa.store.keys import BlockKey
from streamvqa.store.tiers.base import Data, data_len

log = logging.getLogger("streamvqa.store.tiered")

PENDING = "pending"


@dataclass
class Pending:
    data: Data
    gen: int
    dst: int  # the tier it is on its way to
    size: int
    in_flight: bool = False
    not_before: float = 0.0  # retry backoff after a failed write


class StagingArea:
    """Blocks on their way to a colder tier, oldest first. Guarded by the store's metadata lock."""

    def __init__(self) -> None:
        self._items: OrderedDict[BlockKey, Pending] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: BlockKey) -> bool:
        return key in self._items

    def get(self, key: BlockKey) -> Pending | None:
        return self._items.get(key)

    def put(self, key: BlockKey, p: Pending) -> None:
        self.pop(key)
        self._items[key] = p
        self.nbytes += p.size

    def pop(self, key: BlockKey) -> Pending | None:
        p = self._items.pop(key, None)
        if p is not None:
            self.nbytes -= p.size
        return p

    def retry_later(self, key: BlockKey, p: Pending, backoff_s: float) -> None:
        p.in_flight = False
        p.not_before = time.monotonic() + backoff_s
        self._items.move_to_end(key)

    def ready(self, now: float) -> tuple[BlockKey, Pending] | None:
        """The oldest block whose retry time has come."""
        return next(((k, p) for k, p in self._items.items() if p.not_before <= now), None)

    def full(self, wb: WriteBehindConfig) -> bool:
        return len(self._items) >= wb.max_items or self.nbytes >= wb.max_bytes

    def totals(self, stream_id: str | None) -> tuple[int, int]:
        """(bytes, blocks) staged, for one stream or all."""
        sizes = [p.size for k, p in self._items.items() if stream_id is None or k.stream_id == stream_id]
        return sum(sizes), len(sizes)


class WriteBehindMixin:
    def _start_writer(self) -> None:
        self._busy = False
        self._stop = False
        self._worker_ident: int | None = None
        self._worker = threading.Thread(target=self._run, name="tiered-store-writer", daemon=True)
        self._worker.start()

    def _stop_writer(self, timeout: float | None) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if not self._on_writer():
            self._worker.join(timeout)

    def _on_writer(self) -> bool:
        return threading.get_ident() == self._worker_ident

    def flush(self, timeout: float | None = None, *, spill: bool = True) -> bool:
        """Wait until the write-behind area and the prefetch queue are empty (and, with
        ``spill``, the spill area drained into its durable tier)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._staging or self._prefetch or self._busy or (spill and self._spilled):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(0.05 if left is None else min(left, 0.05))
            return True

    def _stage(self, key: BlockKey, data: Data, gen: int, dst: int, *, backoff: bool = False) -> None:
        with self._cond:
            entry = self._index.get(key)
            if entry is None or entry.gen != gen:
                return
            nb = time.monotonic() + self.config.write_behind.retry_backoff_s if backoff else 0.0
            self._staging.put(key, Pending(data, gen, dst, data_len(data), not_before=nb))
            self._stats.pending_high_water = max(self._stats.pending_high_water, self._staging.nbytes)
            self._cond.notify_all()

    def _wait_for_room(self) -> None:
        """Backpressure: wait while the write-behind area is full (never on the worker)."""
        if self._on_writer():
            return
        wb = self.config.write_behind
        deadline = None if wb.put_timeout_s is None else time.monotonic() + wb.put_timeout_s
        with self._cond:
            waited = False
            while self._staging.full(wb):
                waited = True
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise StoreFullError(
                        f"write-behind area full for {wb.put_timeout_s}s "
                        f"({len(self._staging)} blocks, {self._staging.nbytes} bytes)"
                    )
                self._cond.wait(0.1 if left is None else min(left, 0.1))
            if waited:
                self._stats.put_waits += 1

    def _run(self) -> None:
        self._worker_ident = threading.get_ident()
        backoff = self.config.write_behind.retry_backoff_s
        while True:
            with self._cond:
                job = None
                while job is None:
                    key = self._prefetch.pop()
                    if key is not None:
                        job = ("prefetch", key, None)
                        break
                    now = time.monotonic()
                    ready = self._staging.ready(now)
                    if ready is not None:
                        ready[1].in_flight = True
                        job = ("land", ready[0], ready[1])
                        break
                    if self._spilled and self._spill_retry_at <= now:
                        job = ("unspill", None, None)
                        break
                    if self._stop:
                        return
                    self._cond.wait(0.05 if self._staging or self._spilled else None)
                self._busy = True
            try:
                if job[0] == "prefetch":
                    self._do_prefetch(job[1])
                elif job[0] == "unspill":
                    self._unspill()
                else:
                    self._land(job[1], job[2])
            except Exception:  # never let the worker die (nor spin on the same job)
                log.exception("write-behind worker error")
                with self._cond:
                    if job[0] == "land":
                        job[2].in_flight = False
                        job[2].not_before = time.monotonic() + backoff
                    elif job[0] == "unspill":
                        self._spill_retry_at = time.monotonic() + backoff
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _land(self, key: BlockKey, p: Pending) -> None:
        """Write a staged block into its destination tier (or the next one that works)."""
        with self._meta:
            entry = self._index.get(key)
            done = entry is None or entry.gen != p.gen or any(j >= p.dst for j in entry.tiers)
        dst = self._fit(p.dst, p.size)
        if dst is None:  # fits no colder tier: dropped below (counted as an eviction)
            done = True
        while not done and dst is not None:
            try:
                self._write(dst, key, p.data, p.gen, sync=True)
                done = True
            except (StoreError, OSError) as e:
                self._error(dst, e)
                dst = self._fit(dst + 1, p.size)
        with self._cond:
            if self._staging.get(key) is p:
                if done:
                    self._staging.pop(key)
                    entry = self._index.get(key)
                    if entry is not None and entry.gen == p.gen and not entry.tiers \
                            and key not in self._spilled:  # nowhere to go
                        self._forget(key)
                        self._stats.evictions += 1
                else:  # every colder tier failed: keep it readable here, retry later
                    self._staging.retry_later(key, p, self.config.write_behind.retry_backoff_s)
            self._cond.notify_all()
