"""`TieredStore`: the `BlockStore` protocol over an ordered list of tiers (warmest first).

Policy, in one place (tiers only store bytes):

- **put** encodes the block once and acknowledges when it is whole in the first tier that can
  hold it. With ``durable=True`` it is first written through to the first durable tier (disk or
  Redis), so an acknowledged block survives a crash of this process.
- **budgets**: before a tier takes a block, its least-recently-used blocks make room. A victim
  that already has a colder copy is simply deleted; otherwise it moves one tier down; a victim of
  the last tier is dropped (counted in ``evictions`` and removed from the index).
- **write-behind**: victims of the first tier do not wait for the cold tier on the put path. Their
  bytes go to a bounded staging area (``pending``, still readable) drained by one background
  worker; `put` waits only while that area is full (``write_behind.max_items`` / ``max_bytes``).
- **promotion**: `get_many` copies blocks found in a colder tier back into the warmest tier;
  `prefetch` does the same in the background for blocks retrieval is about to need.
- **index**: rep_keys and time ranges of every live block stay in memory whatever tier holds the
  bytes; on open, blocks already in durable tiers for this model fingerprint are re-indexed from
  their headers.
- **spill** (durable only, `spill.py`): while every durable tier is down, an acknowledged block
  is written to a local spill directory (bounded; `put` waits beyond it) and drained into the
  durable tier by the worker when it is back; a crash meanwhile recovers it from the spill.
- **audit** (`audit.py`): a background thread asks Redis tiers whether they lost data (run id,
  marker key; a read miss forces it). Lost copies are dropped from the bookkeeping, blocks that
  lost their only durable copy are re-written from their other copies, and a block with no copy
  left leaves the index (counted in ``lost``): the store never claims a block it does not have.

Each policy has its module, mixed into `TieredStore` (the one entry point): `budgets.py`
(per-tier LRU, making room), `writebehind.py` (staging area, writer thread), `promotion.py`
(promote on get, prefetch), `recovery.py` (re-index on open, persist on close), `leasing.py`
(pins for zero-copy readers), `spill.py`, `audit.py`; `index.py` holds what is known of every
block, `stats.py` the counters. This module keeps the `BlockStore` API and the bookkeeping of
copies (where a block is, dropping a copy, forgetting a block).

Locking: one lock per tier serialises "make room + write" on that tier (taken in tier order, so
cascades cannot deadlock); a metadata lock guards the index, LRU lists and staging area and is
never held during tier I/O, so readers never wait on Redis or disk writes of others.
"""

from __future__ import annotations

import itertools
import logging
import threading

from streamvqa.store import format as fmt
from streamvqa.store import shm
from streamvqa.store.audit import AuditMixin
from streamvqa.store.base import StreamIndex
from streamvqa.store.block import Block
from streamvqa.store.budgets import BudgetMixin, LruLists, NoRoomError
from streamvqa.store.config import TieredStoreConfig
from streamvqa.store.errors import BlockNotFoundError, CorruptBlockError, StoreError
from streamvqa.store.index import BlockIndex, Entry
from streamvqa.store.keys import BlockKey
from streamvqa.store.leasing import LeaseMixin
from streamvqa.store.promotion import PrefetchQueue, PromotionMixin
from streamvqa.store.recovery import RecoveryMixin
from streamvqa.store.spill import SPILL, SpillMixin
from streamvqa.store.stats import StoreStats
from streamvqa.store.tiers import Tier, build_tier
from streamvqa.store.tiers.base import Data
from streamvqa.store.writebehind import PENDING, StagingArea, WriteBehindMixin

log = logging.getLogger(__name__)

__all__ = ["PENDING", "SPILL", "StoreStats", "TieredStore"]


class TieredStore(
    BudgetMixin, WriteBehindMixin, PromotionMixin, RecoveryMixin, LeaseMixin, SpillMixin, AuditMixin
):
    """Block store over host RAM (shared memory) → disk → Redis, any ordered subset."""

    def __init__(self, config: TieredStoreConfig, *, tiers: list[Tier] | None = None) -> None:
        self.config = config
        self.fingerprint = config.fingerprint
        if tiers is None:
            if any(t.kind == "host" for t in config.tiers):
                removed = shm.janitor(next(t.shm_prefix for t in config.tiers if t.kind == "host"))
                if removed:
                    log.info("janitor removed %d leftover shared-memory segments", len(removed))
            tiers = [build_tier(c) for c in config.tiers]
        self.tiers: list[Tier] = tiers
        self.names = [t.name for t in tiers]
        self._meta = threading.RLock()
        self._cond = threading.Condition(self._meta)
        self._tier_locks = [threading.RLock() for _ in tiers]
        self._index = BlockIndex()
        self._lru = LruLists(len(tiers))
        self._staging = StagingArea()
        self._prefetch = PrefetchQueue()
        self._gens = itertools.count(1)
        self._stats = StoreStats()
        self._closed = False
        self._init_leases()
        self._init_spill()
        self._init_audit()
        if config.recover:
            self._recover()
        self._start_writer()
        self._start_auditor()

    # ------------------------------------------------------------------ BlockStore protocol
    def put(self, block: Block) -> None:
        """Store `block`; returns once it is whole in its first tier (and the durable tier when
        ``durable``). Blocks only while the write-behind area is full."""
        self._check_open()
        key = self.key(block.stream_id, block.index)
        planned = fmt.plan(block, self.fingerprint)
        size = planned.size
        if size > max(t.budget_bytes for t in self.tiers):
            raise ValueError(f"block of {size} bytes exceeds every tier budget")
        self._wait_for_room()
        with self._meta:
            old = self._forget(key)
            entry = Entry(
                gen=next(self._gens),
                size=size,
                t_start=float(block.t_start),
                t_end=float(block.t_end),
                rep_keys=block.rep_keys.detach().to("cpu", copy=True),
            )
            self._index.add(key, entry)
        if old is not None:
            self._delete_copies(key, old.tiers)
        d: int | str | None = self._durable_tier
        data: Data = planned if d is None else planned.to_bytes()
        first = self._first_fitting(0, size)
        try:
            if d is not None:  # durable tier, another durable tier, or the spill area
                d = self._write_durable(key, data, entry.gen)
            if d is None or (d != first and not self.tiers[first].durable):
                try:
                    self._write(first, key, data, entry.gen, sync=d is not None)
                except NoRoomError:  # the first tier is full of leased blocks
                    if d is None:  # go one tier down (a durable block is readable where it is)
                        self._write(self._first_fitting(first + 1, size), key, data, entry.gen, sync=True)
        except BaseException:  # not acknowledged: leave no trace
            with self._meta:
                gone = self._forget(key) if self._index.get(key) is entry else None
            if gone is not None:
                self._delete_copies(key, gone.tiers)
            raise
        with self._meta:
            if self._index.get(key) is entry:
                self._index.ack(key)
            self._stats.puts += 1

    def get_many(self, stream_id: str, indices: list[int]) -> list[Block]:
        """Blocks in the order asked; raises `BlockNotFoundError` / `CorruptBlockError` naming
        the blocks that could not be read (see `get_available` to get the others anyway)."""
        found, failed = self.get_available(stream_id, indices)
        if failed:
            first = failed[min(failed)]
            detail = ", ".join(f"{i}: {e}" for i, e in sorted(failed.items()))
            raise type(first)(f"stream {stream_id!r}: {len(failed)} block(s) unreadable ({detail})")
        return [found[i] for i in indices]

    def get_available(
        self, stream_id: str, indices: list[int]
    ) -> tuple[dict[int, Block], dict[int, StoreError]]:
        """Readable blocks by index, and an error per block that is missing or corrupt."""
        self._check_open()
        keys = {i: self.key(stream_id, i) for i in dict.fromkeys(indices)}
        found: dict[int, Block] = {}
        failed: dict[int, StoreError] = {}
        hits: dict[str, int] = {}
        todo = dict(keys)
        for _attempt in range(len(self.tiers) + 3):
            if not todo:
                break
            plan: dict[int | str, list[tuple[int, BlockKey, int]]] = {}
            pending_data: dict[BlockKey, Data] = {}
            with self._meta:
                for i, key in todo.items():
                    entry = self._index.get(key)
                    if entry is None or not entry.acked:
                        failed.setdefault(
                            i, BlockNotFoundError(f"block {key.stream_id!r}#{key.index} is not stored")
                        )
                        continue
                    src = self._locate(key, entry)
                    if src is None:
                        failed.setdefault(
                            i, BlockNotFoundError(f"block {key.stream_id!r}#{key.index}: no tier holds it")
                        )
                        continue
                    if src == PENDING:
                        pending_data[key] = self._staging.get(key).data
                    elif src != SPILL:
                        self._lru.touch(src, key)
                    plan.setdefault(src, []).append((i, key, entry.gen))
            todo = {}
            for src, items in plan.items():
                if src == PENDING:
                    datas = [pending_data[k] for _, k, _ in items]
                else:
                    try:
                        datas = self._tier(src).get_many([k for _, k, _ in items])
                    except (StoreError, OSError) as e:  # tier down: these blocks fail this call
                        self._error(src, e)
                        for i, _k, _ in items:
                            failed[i] = e if isinstance(e, StoreError) else StoreError(str(e))
                        continue
                tier_name = self._name(src)
                for (i, key, gen), data in zip(items, datas, strict=True):
                    if data is None:  # moved or expired meanwhile: locate again
                        if src != PENDING:
                            self._confirm_gone(key, src)
                        todo[i] = key
                        continue
                    if isinstance(data, fmt.EncodedBlock):
                        data = data.to_bytes()
                    try:
                        block = fmt.decode(
                            data,
                            expect_fingerprint=self.fingerprint,
                            check=self._verify(src),
                            copy=src == PENDING,  # staged bytes are still to be written out
                        )
                    except CorruptBlockError as e:
                        with self._meta:
                            self._stats.corrupt += 1
                        log.warning("corrupt copy of %s in tier %s: %s", key, tier_name, e)
                        if src != PENDING:
                            self._discard_copy(key, src)
                        todo[i] = key
                        failed[i] = CorruptBlockError(
                            f"block {key.stream_id!r}#{key.index} in {tier_name}: {e}"
                        )
                        continue
                    failed.pop(i, None)
                    found[i] = block
                    hits[tier_name] = hits.get(tier_name, 0) + 1
                    if src != 0 and self.config.promote_on_get:
                        self._promote(key, data, gen)
        for i in todo:  # still unresolved after retries
            failed.setdefault(i, BlockNotFoundError(f"block {stream_id!r}#{i} could not be located"))
        with self._meta:
            self._stats.gets += len(keys)
            self._stats.misses += len(failed)
            for name, n in hits.items():
                self._stats.bump("hits", name, n)
        return found, failed

    def index(self, stream_id: str) -> StreamIndex:
        with self._meta:
            return self._index.stream_index(stream_id, self.key)

    def drop_stream(self, stream_id: str) -> None:
        """Forget a stream and delete its blocks from every tier."""
        with self._meta:
            gone = self._index.drop_stream(stream_id)
            for key, _ in gone:
                self._unstage(key)
        for key, entry in gone:
            self._delete_copies(key, entry.tiers)

    def bytes_by_tier(self, stream_id: str | None = None) -> dict[str, int]:
        """Encoded bytes (header + payload) held per tier, plus blocks staged in ``pending``."""
        with self._meta:
            out = {name: self._lru.totals(i, stream_id)[0] for i, name in enumerate(self.names)}
            out[PENDING] = self._staging.totals(stream_id)[0]
            return out

    def blocks_by_tier(self, stream_id: str | None = None) -> dict[str, int]:
        with self._meta:
            out = {name: self._lru.totals(i, stream_id)[1] for i, name in enumerate(self.names)}
            out[PENDING] = self._staging.totals(stream_id)[1]
            return out

    # ------------------------------------------------------------------ extras
    def key(self, stream_id: str, index: int) -> BlockKey:
        return BlockKey(self.fingerprint, stream_id, int(index))

    def lost_blocks(self, stream_id: str) -> dict[int, tuple[float, float]]:
        """Acknowledged blocks of a stream that were lost (no copy left; see `audit`): index ->
        (t_start, t_end). They are no longer in `index`; answers report them as missing."""
        with self._meta:
            return self._index.lost_blocks(stream_id)

    def tier_of(self, stream_id: str, index: int) -> str | None:
        """Name of the warmest tier (or ``pending``) holding a block, None if none."""
        key = self.key(stream_id, index)
        with self._meta:
            entry = self._index.get(key)
            src = self._locate(key, entry) if entry else None
            return None if src is None else self._name(src)

    def health(self) -> dict:
        """Per-tier reachability for `/ready`: ``{"ok", "degraded": [names], "tiers": {...}}``.
        A degraded cold tier leaves the store usable (answers come from warm tiers)."""
        tiers = {}
        for t in self.tiers:
            probe = getattr(t, "ping", None)
            try:
                ok = bool(probe()) if probe is not None else True
            except Exception:
                ok = False
            tiers[t.name] = {"ok": ok, "bytes": t.nbytes(), "budget_bytes": t.budget_bytes}
        with self._meta:
            for name, n in self._stats.errors.items():
                if name in tiers:
                    tiers[name]["errors"] = n
            for name, n in self._stats.resyncs.items():
                tiers[name]["resyncs"] = n
            for name, n in self._resync_pending.items():
                tiers[name]["resync_pending"] = n
            pending = len(self._staging)
            spill = None if self._spill is None else {
                "ok": True, "bytes": self._spill.nbytes(), "budget_bytes": self._spill.budget_bytes,
                "items": len(self._spilled),
            }
        degraded = [n for n, v in tiers.items() if not v["ok"]]
        if spill is not None:
            tiers[SPILL] = spill
        return {
            "ok": not self._closed and tiers[self.names[0]]["ok"],
            "degraded": degraded,
            "pending_items": pending,
            "tiers": tiers,
        }

    def stats(self) -> dict:
        with self._meta:
            out = self._stats.snapshot()
            out["pending_items"] = len(self._staging)
            out["pending_bytes"] = self._staging.nbytes
            out["spilled_items"] = len(self._spilled)
            out["spill_bytes"] = 0 if self._spill is None else self._spill.nbytes()
            out["resync_pending"] = sum(self._resync_pending.values())
            out["budgets"] = {t.name: t.budget_bytes for t in self.tiers}
            return out

    def close(self, timeout: float | None = None) -> None:
        """Drain the write-behind queue, stop the worker, release tiers (shared memory unlinked)."""
        if self._closed:
            return
        self.flush(timeout, spill=False)  # spilled blocks are durable where they are
        if self.config.persist_on_close:
            self._persist_warm()
        self._closed = True
        self._stop_writer(timeout)
        self._stop_auditor(timeout)
        for t in self.tiers:
            t.close()
        if self._spill is not None:
            self._spill.close()

    def __enter__(self) -> TieredStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("store is closed")

    def _tier(self, src: int | str) -> Tier:
        return self._spill if src == SPILL else self.tiers[src]  # type: ignore[return-value,index]

    def _name(self, src: int | str) -> str:
        return src if isinstance(src, str) else self.names[src]

    def _verify(self, src: int | str) -> bool:
        if src == PENDING:
            return False
        if src == SPILL:
            return True
        cfg = self.tiers[src].config if hasattr(self.tiers[src], "config") else None
        return bool(getattr(cfg, "verify_reads", True))

    def _locate(self, key: BlockKey, entry: Entry) -> int | str | None:
        """Warmest copy: a tier, the staging area, or None (meta lock held)."""
        tiers = sorted(entry.tiers)
        if tiers and tiers[0] == 0:
            return 0
        staged = self._staging.get(key)
        if staged is not None and staged.gen == entry.gen:
            return PENDING
        if tiers:
            return tiers[0]
        spilled = self._spilled.get(key)
        return SPILL if spilled is not None and spilled[0] == entry.gen else None

    def _forget(self, key: BlockKey) -> Entry | None:
        """Remove a block from the index and staging area (meta lock held)."""
        entry = self._index.pop(key)
        self._unstage(key)
        return entry

    def _unstage(self, key: BlockKey) -> None:
        """Meta lock held: the block leaves the staging and spill bookkeeping (its spill file
        goes with `_delete_copies`)."""
        self._spilled.pop(key, None)
        if self._staging.pop(key) is not None:
            self._cond.notify_all()

    def _drop_copy(self, key: BlockKey, i: int) -> None:
        """Bookkeeping: tier i no longer holds key (meta lock held)."""
        self._lru.drop(i, key)
        entry = self._index.get(key)
        if entry is not None:
            entry.tiers.discard(i)

    def _confirm_gone(self, key: BlockKey, i: int | str) -> None:
        """A read of tier i found nothing: forget that copy unless it was (re)written meanwhile;
        a block left with no copy leaves the index. A miss in Redis checks that whole tier at
        once (it may have lost more than this block), so the caller's next index is true."""
        if i == SPILL:
            with self._spill_lock, self._meta:
                if self._spill is not None and not self._spill.contains(key):
                    self._spilled.pop(key, None)
                    self._forget_if_lost(key)
            return
        with self._tier_locks[i], self._meta:
            missed = not self.tiers[i].contains(key)
            if missed:
                self._drop_copy(key, i)
                if not self._forget_if_lost(key) and self._needs_rewrite(key):
                    self._queue_rewrite(key, i)
                    self._audit_now.set()
        if missed and hasattr(self.tiers[i], "lost_data"):
            self._check_tier(i, force=True)

    def _needs_rewrite(self, key: BlockKey) -> bool:
        """Meta lock held: a durable store's block whose durable copies are all gone."""
        entry = self._index.get(key)
        return (
            self.config.durable and entry is not None and entry.acked and key not in self._spilled
            and not any(self.tiers[j].durable for j in entry.tiers)
        )

    def _forget_if_lost(self, key: BlockKey) -> bool:
        """Meta lock held: an acknowledged block with no copy anywhere leaves the index."""
        entry = self._index.get(key)
        if entry is None or not entry.acked or entry.tiers or key in self._staging or key in self._spilled:
            return False
        log.warning("block %s is lost: no tier holds a copy any more", key)
        self._index.mark_lost(key)
        self._stats.lost += 1
        return True

    def _discard_copy(self, key: BlockKey, i: int | str) -> None:
        with self._spill_lock if i == SPILL else self._tier_locks[i]:  # type: ignore[index]
            try:
                self._tier(i).delete(key)
            except (StoreError, OSError) as e:
                self._error(i, e)
            with self._meta:
                if i == SPILL:
                    self._spilled.pop(key, None)
                else:
                    self._drop_copy(key, i)
                entry = self._index.get(key)
                if entry is not None and not entry.tiers and key not in self._staging and key not in self._spilled:
                    self._forget(key)

    def _delete_copies(self, key: BlockKey, tiers: set[int]) -> None:
        for i in sorted(tiers):
            with self._tier_locks[i]:
                try:
                    self.tiers[i].delete(key)
                except (StoreError, OSError) as e:
                    self._error(i, e)
                with self._meta:
                    self._lru.drop(i, key)
        if self._spill is not None:
            with self._spill_lock:
                if self._spill.contains(key) and key not in self._spilled:
                    self._spill.delete(key)

    def _error(self, i: int | str, e: BaseException) -> None:
        name = i if isinstance(i, str) else self.names[i]
        log.warning("tier %s failed: %s", name, e)
        with self._meta:
            self._stats.bump("errors", name)

    def _read_raw(self, key: BlockKey, entry: Entry) -> Data:
        """Verified encoded bytes of a block from its warmest copy (raises if none is readable)."""
        for _attempt in range(len(self.tiers) + 2):
            with self._meta:
                src = self._locate(key, entry)
                data = self._staging.get(key).data if src == PENDING else None
            if src is None:
                break
            if data is not None:
                return data
            try:
                data = self._tier(src).get(key)
            except (StoreError, OSError) as e:
                self._error(src, e)
                raise StoreError(
                    f"block {key.stream_id!r}#{key.index}: tier {self._name(src)} failed: {e}"
                ) from e
            if data is None:
                self._confirm_gone(key, src)
                continue
            try:
                fmt.verify(data)
                return data
            except CorruptBlockError as e:
                log.warning("corrupt copy of %s in tier %s: %s", key, self._name(src), e)
                with self._meta:
                    self._stats.corrupt += 1
                self._discard_copy(key, src)
        raise BlockNotFoundError(f"block {key.stream_id!r}#{key.index}: no readable copy")

