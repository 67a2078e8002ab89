"""`TieredStore`'s audit of tiers that can lose data behind its back (Redis).

A thread asks every Redis tier `lost_data()` each ``audit_interval_s`` (Redis's run id changed,
or its marker key is gone); a read that misses checks its tier at once. Copies Redis lost leave
the bookkeeping; a durable store's block that lost its only durable copy is written again from
the copy it still has; a block with no copy left leaves the index. A durable tier that was down
when the store opened is scanned here once it answers.

A mixin of `TieredStore` (it works on the store's index, LRU lists and locks).
"""

from __future__ import annotations

import logging
import threading
from contextlib import ExitStack

from streamvqa.store import format as fmt
from streamvqa.store.budgets import NOBODY
from streamvqa.store.errors import StoreError
from streamvqa.store.keys import BlockKey

log = logging.getLogger("streamvqa.store.tiered")


class AuditMixin:
    def _init_audit(self) -> None:
        self._resync_pending: dict[str, int] = {}  # tier -> blocks still to re-write after a loss
        self._audit_now = threading.Event()
        self._rewrite_later: dict[BlockKey, int] = {}  # read misses: durable copy gone, re-write
        self._unscanned: set[int] = set()  # durable tiers that were down when we recovered
        self._audit_lock = threading.Lock()  # one look at a tier's losses at a time
        self._auditor: threading.Thread | None = None

    def _start_auditor(self) -> None:
        """Only where there is something to watch: a Redis tier, or a tier down at start."""
        if self._unscanned or any(hasattr(t, "lost_data") for t in self.tiers):
            self._auditor = threading.Thread(target=self._audit_loop, name="tiered-store-audit", daemon=True)
            self._auditor.start()

    def _stop_auditor(self, timeout: float | None) -> None:
        self._audit_now.set()
        if self._auditor is not None:
            self._auditor.join(timeout)

    def _audit_loop(self) -> None:
        while True:
            self._audit_now.wait(self.config.audit_interval_s)
            self._audit_now.clear()
            if self._closed:
                return
            try:
                self.audit()
            except Exception:  # never let the auditor die
                log.exception("store audit failed")

    def audit(self, *, force: bool = False) -> int:
        """Check the tiers that can lose data behind our back (Redis), and write again what they
        lost that is held elsewhere; returns the number of lost copies found. Runs every
        ``audit_interval_s``; a read miss checks its tier at once (`force`)."""
        for i in sorted(self._unscanned):
            try:
                self._rescan(i)
            except (StoreError, OSError):
                pass  # still down
        found = sum(self._check_tier(i, force=force) for i, t in enumerate(self.tiers) if hasattr(t, "lost_data"))
        with self._meta:
            queued, self._rewrite_later = self._rewrite_later, {}
        for i in sorted(set(queued.values())):
            self._rewrite(i, [k for k, t in queued.items() if t == i])
        return found

    def _check_tier(self, i: int, *, force: bool) -> int:
        """Ask tier i whether it lost data (``force``: look anyway) and drop what it lost from
        the bookkeeping at once; re-writes are queued for the auditor. Returns copies lost."""
        tier = self.tiers[i]
        with self._audit_lock:
            try:
                if not tier.lost_data() and not force:  # type: ignore[attr-defined]
                    return 0
                gone = tier.missing()  # type: ignore[attr-defined]
            except (StoreError, OSError):  # down: the health probe reports it, writes go elsewhere
                return 0
            if gone:
                self._resync(i, gone)
            return len(gone)

    def _rescan(self, i: int) -> None:
        """Recovery of a tier that was down when the store opened: index the blocks it holds
        that the store does not know (blocks put since then win)."""
        tier = self.tiers[i]
        found = list(tier.scan(self.fingerprint))
        self._unscanned.discard(i)
        self._stats.recovered += self._index_unknown(i, found, oldest=True)  # older than anything written since
        log.info("tier %s is back: %d blocks re-indexed", tier.name, len(found))
        if tier.nbytes() > tier.budget_bytes:
            with self._tier_locks[i]:
                self._make_room(i, 0, sync=True, keep=NOBODY)

    def _resync(self, i: int, gone: list[BlockKey]) -> None:
        """Tier i lost these copies: drop them from the bookkeeping, re-write blocks that lost
        their only durable copy from a copy held elsewhere, and forget blocks with none."""
        name = self.names[i]
        rewrite: list[BlockKey] = []
        lost = 0
        # warmer tiers' locks: none of them may evict a block as "has a colder copy" meanwhile
        with ExitStack() as locks:
            for j in range(i + 1):
                locks.enter_context(self._tier_locks[j])
            with self._meta:
                self._stats.bump("resyncs", name)
                for key in gone:
                    entry = self._index.get(key)
                    if entry is None or i not in entry.tiers:
                        continue  # deleted or re-written by us meanwhile
                    self._drop_copy(key, i)
                    if self._forget_if_lost(key):
                        lost += 1
                    elif self._needs_rewrite(key):
                        rewrite.append(key)
                        self._queue_rewrite(key, i)
        log.warning("tier %s lost %d block copies: re-writing %d held elsewhere, %d lost",
                    name, len(gone), len(rewrite), lost)
        if rewrite:
            self._audit_now.set()

    def _queue_rewrite(self, key: BlockKey, i: int) -> None:
        """Meta lock held: `key` lost its durable copy in tier i; the auditor writes it again
        (not in a tier with a TTL: there blocks are meant to vanish)."""
        if getattr(getattr(self.tiers[i], "config", None), "ttl_s", None) is not None:
            return
        if key not in self._rewrite_later:
            self._rewrite_later[key] = i
            name = self.names[i]
            self._resync_pending[name] = self._resync_pending.get(name, 0) + 1

    def _rewrite(self, i: int, keys: list[BlockKey]) -> None:
        """Write blocks that lost their durable copy in tier i again, from another copy."""
        name = self.names[i]
        with self._meta:
            self._resync_pending[name] -= len(keys)  # from queued to in progress (counted below)
            rewrite = [(k, e) for k in keys if (e := self._index.get(k)) is not None and self._needs_rewrite(k)]
            self._resync_pending[name] += len(rewrite)
        try:
            for key, entry in rewrite:
                try:
                    data = self._read_raw(key, entry)
                    data = bytes(data.to_bytes() if isinstance(data, fmt.EncodedBlock) else data)
                except StoreError:
                    data = None  # gone meanwhile (dropped, or its last copy failed)
                try:
                    if data is not None:
                        self._write_durable(key, data, entry.gen)
                        with self._meta:
                            self._stats.rewritten += 1
                except (StoreError, OSError) as e:  # no durable place now: queue it for tier i
                    self._error(i, e)
                    self._stage(key, data, entry.gen, i, backoff=True)
                finally:
                    with self._meta:
                        self._resync_pending[name] -= 1
        finally:
            with self._meta:
                if self._resync_pending.get(name) == 0:
                    self._resync_pending.pop(name)
