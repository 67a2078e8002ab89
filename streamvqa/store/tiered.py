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

Locking: one lock per tier serialises "make room + write" on that tier (taken in tier order, so
cascades cannot deadlock); a metadata lock guards the index, LRU lists and staging area and is
never held during tier I/O, so readers never wait on Redis or disk writes of others.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import torch

from streamvqa.store import format as fmt
from streamvqa.store import shm
from streamvqa.store.audit import AuditMixin
from streamvqa.store.base import StreamIndex
from streamvqa.store.block import Block
from streamvqa.store.config import DiskTierConfig, TieredStoreConfig
from streamvqa.store.errors import BlockNotFoundError, CorruptBlockError, StoreError, StoreFullError
from streamvqa.store.keys import BlockKey
from streamvqa.store.leases import BlockDescriptor, LeaseTable
from streamvqa.store.spill import SPILL, SpillMixin
from streamvqa.store.tiers import DiskTier, HostTier, Tier, build_tier
from streamvqa.store.tiers.base import Data, data_len

log = logging.getLogger(__name__)

PENDING = "pending"
_HEAD_READ = 64 << 10


class _NoRoom(StoreError):
    """Every block left in the tier is leased: nothing can be evicted to make room."""


@dataclass
class _Entry:
    gen: int
    size: int
    t_start: float
    t_end: float
    rep_keys: torch.Tensor
    tiers: set[int] = field(default_factory=set)
    acked: bool = False


@dataclass
class _Pending:
    data: Data
    gen: int
    dst: int  # the tier it is on its way to
    size: int
    in_flight: bool = False
    not_before: float = 0.0  # retry backoff after a failed write


@dataclass
class StoreStats:
    """Counters; `TieredStore.stats()` returns a snapshot as a dict."""

    puts: int = 0
    gets: int = 0
    hits: dict[str, int] = field(default_factory=dict)
    misses: int = 0
    demotions: dict[str, int] = field(default_factory=dict)  # by tier the block left
    promotions: int = 0
    promotions_skipped: int = 0
    prefetch_requested: int = 0
    prefetched: int = 0
    evictions: int = 0  # dropped from the last tier
    corrupt: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    recovered: int = 0
    pending_high_water: int = 0
    put_waits: int = 0
    spilled: int = 0  # blocks written to the spill area (durable tier down)
    unspilled: int = 0  # blocks drained from it into their durable tier
    resyncs: dict[str, int] = field(default_factory=dict)  # audits that found lost copies, by tier
    rewritten: int = 0  # blocks re-written into a durable tier after it lost them
    lost: int = 0  # acknowledged blocks left with no copy (removed from the index)

    def bump(self, name: str, tier: str | None = None, n: int = 1) -> None:
        if tier is None:
            setattr(self, name, getattr(self, name) + n)
        else:
            d = getattr(self, name)
            d[tier] = d.get(tier, 0) + n


class TieredStore(SpillMixin, AuditMixin):
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
        n = len(tiers)
        self._durable_tier: int | None = None
        if config.durable:
            self._durable_tier = next(i for i, t in enumerate(tiers) if t.durable)
        self._meta = threading.RLock()
        self._cond = threading.Condition(self._meta)
        self._tier_locks = [threading.RLock() for _ in range(n)]
        self._lru: list[OrderedDict[BlockKey, int]] = [OrderedDict() for _ in range(n)]
        self._entries: dict[BlockKey, _Entry] = {}
        self._streams: dict[str, set[int]] = {}
        self._index_cache: dict[str, StreamIndex] = {}
        self._pending: OrderedDict[BlockKey, _Pending] = OrderedDict()
        self._pending_bytes = 0
        self._prefetch: deque[BlockKey] = deque()
        self._prefetch_set: set[BlockKey] = set()
        self._busy = False
        self._gens = itertools.count(1)
        self._stats = StoreStats()
        self._leases = LeaseTable()
        self._closed = False
        self._stop = False
        self._worker_ident: int | None = None
        self._spill: DiskTier | None = None
        if config.spill is not None:
            sc = config.spill
            self._spill = DiskTier(DiskTierConfig(name=SPILL, path=sc.path, budget_bytes=sc.budget_bytes,
                                                  fsync=sc.fsync))
        self._spilled: OrderedDict[BlockKey, tuple[int, int]] = OrderedDict()  # key -> (gen, dst tier)
        self._spill_reserved = 0
        self._spill_lock = threading.Lock()  # a spill file's write/registration vs its removal
        self._spill_retry_at = 0.0
        self._down_until: dict[int, float] = {}  # durable tiers that just failed: spill, do not wait
        self._resync_pending: dict[str, int] = {}  # tier -> blocks still to re-write after a loss
        self._audit_now = threading.Event()
        self._lost: dict[str, dict[int, tuple[float, float]]] = {}  # stream -> lost block -> times
        self._rewrite_later: dict[BlockKey, int] = {}  # read misses: durable copy gone, re-write
        self._unscanned: set[int] = set()  # durable tiers that were down when we recovered
        self._audit_lock = threading.Lock()  # one look at a tier's losses at a time
        if config.recover:
            self._recover()
        self._worker = threading.Thread(target=self._run, name="tiered-store-writer", daemon=True)
        self._worker.start()
        self._auditor: threading.Thread | None = None
        if self._unscanned or any(hasattr(t, "lost_data") for t in tiers):
            self._auditor = threading.Thread(target=self._audit_loop, name="tiered-store-audit", daemon=True)
            self._auditor.start()

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
            self._lost.get(key.stream_id, {}).pop(key.index, None)
            entry = _Entry(
                gen=next(self._gens),
                size=size,
                t_start=float(block.t_start),
                t_end=float(block.t_end),
                rep_keys=block.rep_keys.detach().to("cpu", copy=True),
            )
            self._entries[key] = entry
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
                except _NoRoom:  # the first tier is full of leased blocks
                    if d is None:  # go one tier down (a durable block is readable where it is)
                        self._write(self._first_fitting(first + 1, size), key, data, entry.gen, sync=True)
        except BaseException:  # not acknowledged: leave no trace
            with self._meta:
                gone = self._forget(key) if self._entries.get(key) is entry else None
            if gone is not None:
                self._delete_copies(key, gone.tiers)
            raise
        with self._meta:
            if self._entries.get(key) is entry:
                entry.acked = True
                self._streams.setdefault(key.stream_id, set()).add(key.index)
                self._index_cache.pop(key.stream_id, None)
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
                    entry = self._entries.get(key)
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
                        pending_data[key] = self._pending[key].data
                    elif src != SPILL:
                        self._lru[src].move_to_end(key)
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
            cached = self._index_cache.get(stream_id)
            if cached is not None:
                return cached
            order = sorted(self._streams.get(stream_id, ()))
            if not order:
                return StreamIndex([], torch.empty(0), [])
            entries = [self._entries[self.key(stream_id, i)] for i in order]
            idx = StreamIndex(
                order, torch.stack([e.rep_keys for e in entries]), [(e.t_start, e.t_end) for e in entries]
            )
            self._index_cache[stream_id] = idx
            return idx

    def drop_stream(self, stream_id: str) -> None:
        """Forget a stream and delete its blocks from every tier."""
        with self._meta:
            gone = [(k, self._forget(k)) for k in list(self._entries) if k.stream_id == stream_id]
            self._streams.pop(stream_id, None)
            self._index_cache.pop(stream_id, None)
            self._lost.pop(stream_id, None)
        for key, entry in gone:
            if entry is not None:
                self._delete_copies(key, entry.tiers)

    def bytes_by_tier(self, stream_id: str | None = None) -> dict[str, int]:
        """Encoded bytes (header + payload) held per tier, plus blocks staged in ``pending``."""
        with self._meta:
            out = {
                name: sum(s for k, s in lru.items() if stream_id is None or k.stream_id == stream_id)
                for name, lru in zip(self.names, self._lru, strict=True)
            }
            out[PENDING] = sum(
                p.size for k, p in self._pending.items() if stream_id is None or k.stream_id == stream_id
            )
            return out

    def blocks_by_tier(self, stream_id: str | None = None) -> dict[str, int]:
        with self._meta:
            out = {
                name: sum(1 for k in lru if stream_id is None or k.stream_id == stream_id)
                for name, lru in zip(self.names, self._lru, strict=True)
            }
            out[PENDING] = sum(1 for k in self._pending if stream_id is None or k.stream_id == stream_id)
            return out

    # ------------------------------------------------------------------ extras
    def key(self, stream_id: str, index: int) -> BlockKey:
        return BlockKey(self.fingerprint, stream_id, int(index))

    def prefetch(self, stream_id: str, indices: list[int]) -> int:
        """Start promoting cold blocks into the warmest tier in the background; returns how many
        were queued (blocks already warm or unknown are skipped)."""
        self._check_open()
        queued = 0
        with self._cond:
            for i in indices:
                key = self.key(stream_id, i)
                entry = self._entries.get(key)
                if entry is None or 0 in entry.tiers or key in self._prefetch_set:
                    continue
                self._prefetch.append(key)
                self._prefetch_set.add(key)
                queued += 1
            self._stats.prefetch_requested += queued
            if queued:
                self._cond.notify_all()
        return queued

    def lease(self, stream_id: str, indices: list[int], ttl_s: float = 30.0) -> list[BlockDescriptor]:
        """Pin blocks in the host tier (promoting cold ones now) and describe where they are, for
        a reader in another process (`streamvqa.store.leases.map_block`). The store does not
        evict them for budget reasons until `release` or the lease expires (``ttl_s``)."""
        self._check_open()
        if not isinstance(self.tiers[0], HostTier):
            raise StoreError("leases need a host (shared-memory) tier as the first tier")
        keys = [self.key(stream_id, i) for i in indices]
        with self._meta:
            for k in keys:
                e = self._entries.get(k)
                if e is None or not e.acked:
                    raise BlockNotFoundError(f"block {k.stream_id!r}#{k.index} is not stored")
        lease_id, _ = self._leases.grant(keys, ttl_s)
        expires_at = time.time() + ttl_s
        try:
            out = []
            for k in keys:
                with self._meta:
                    entry = self._entries.get(k)
                    warm = entry is not None and 0 in entry.tiers
                if entry is None:
                    raise BlockNotFoundError(f"block {k.stream_id!r}#{k.index} was dropped")
                if not warm:
                    data = self._read_raw(k, entry)
                    try:
                        self._write(0, k, data, entry.gen, sync=False)
                    except _NoRoom as e:
                        raise StoreError(f"host tier is full of leased blocks: {e}") from e
                    with self._meta:
                        self._stats.promotions += 1
                ref = self.tiers[0].segment(k)
                if ref is None:
                    raise BlockNotFoundError(f"block {k.stream_id!r}#{k.index} left the host tier")
                out.append(
                    BlockDescriptor(
                        stream_id=k.stream_id,
                        index=k.index,
                        fingerprint=k.fingerprint,
                        segment=ref.name,
                        offset=ref.offset,
                        length=ref.length,
                        generation=entry.gen,
                        lease_id=lease_id,
                        expires_at=expires_at,
                    )
                )
            return out
        except BaseException:
            self._leases.release(lease_id)
            raise

    def release(self, lease_id: str) -> bool:
        """End a lease early (the reader is done); False if it had already expired."""
        return self._leases.release(lease_id)

    def renew(self, lease_id: str, ttl_s: float = 30.0) -> bool:
        return self._leases.renew(lease_id, ttl_s)

    def lost_blocks(self, stream_id: str) -> dict[int, tuple[float, float]]:
        """Acknowledged blocks of a stream that were lost (no copy left; see `audit`): index ->
        (t_start, t_end). They are no longer in `index`; answers report them as missing."""
        with self._meta:
            return dict(self._lost.get(stream_id, {}))

    def tier_of(self, stream_id: str, index: int) -> str | None:
        """Name of the warmest tier (or ``pending``) holding a block, None if none."""
        key = self.key(stream_id, index)
        with self._meta:
            entry = self._entries.get(key)
            src = self._locate(key, entry) if entry else None
            return None if src is None else self._name(src)

    def flush(self, timeout: float | None = None, *, spill: bool = True) -> bool:
        """Wait until the write-behind area and the prefetch queue are empty (and, with
        ``spill``, the spill area drained into its durable tier)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending or self._prefetch or self._busy or (spill and self._spilled):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(0.05 if left is None else min(left, 0.05))
            return True

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
            pending = len(self._pending)
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
            s = self._stats
            out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in vars(s).items()}
            out["pending_items"] = len(self._pending)
            out["pending_bytes"] = self._pending_bytes
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
        with self._cond:
            self._stop = True
            self._closed = True
            self._cond.notify_all()
        self._audit_now.set()
        if threading.get_ident() != self._worker_ident:
            self._worker.join(timeout)
        if self._auditor is not None:
            self._auditor.join(timeout)
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

    def _locate(self, key: BlockKey, entry: _Entry) -> int | str | None:
        """Warmest copy: a tier, the staging area, or None (meta lock held)."""
        tiers = sorted(entry.tiers)
        if tiers and tiers[0] == 0:
            return 0
        if key in self._pending and self._pending[key].gen == entry.gen:
            return PENDING
        if tiers:
            return tiers[0]
        spilled = self._spilled.get(key)
        return SPILL if spilled is not None and spilled[0] == entry.gen else None

    def _fit(self, start: int, size: int) -> int | None:
        """First tier from `start` whose budget can hold `size` bytes, None if none can."""
        return next((i for i in range(start, len(self.tiers)) if size <= self.tiers[i].budget_bytes), None)

    def _first_fitting(self, start: int, size: int) -> int:
        for i in range(start, len(self.tiers)):
            if size <= self.tiers[i].budget_bytes:
                return i
        raise ValueError(f"block of {size} bytes exceeds every tier budget from tier {start}")

    def _forget(self, key: BlockKey) -> _Entry | None:
        """Remove a block from the index and staging area (meta lock held)."""
        entry = self._entries.pop(key, None)
        self._spilled.pop(key, None)  # its file goes with `_delete_copies`
        p = self._pending.pop(key, None)
        if p is not None:
            self._pending_bytes -= p.size
            self._cond.notify_all()
        if key.stream_id in self._streams:
            self._streams[key.stream_id].discard(key.index)
            self._index_cache.pop(key.stream_id, None)
        return entry

    def _drop_copy(self, key: BlockKey, i: int) -> None:
        """Bookkeeping: tier i no longer holds key (meta lock held)."""
        self._lru[i].pop(key, None)
        entry = self._entries.get(key)
        if entry is not None:
            entry.tiers.discard(i)

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
        entry = self._entries.get(key)
        return (
            self.config.durable and entry is not None and entry.acked and key not in self._spilled
            and not any(self.tiers[j].durable for j in entry.tiers)
        )

    def _forget_if_lost(self, key: BlockKey) -> bool:
        """Meta lock held: an acknowledged block with no copy anywhere leaves the index."""
        entry = self._entries.get(key)
        if entry is None or not entry.acked or entry.tiers or key in self._pending or key in self._spilled:
            return False
        log.warning("block %s is lost: no tier holds a copy any more", key)
        self._forget(key)
        self._lost.setdefault(key.stream_id, {})[key.index] = (entry.t_start, entry.t_end)
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
                entry = self._entries.get(key)
                if entry is not None and not entry.tiers and key not in self._pending and key not in self._spilled:
                    self._forget(key)

    def _delete_copies(self, key: BlockKey, tiers: set[int]) -> None:
        for i in sorted(tiers):
            with self._tier_locks[i]:
                try:
                    self.tiers[i].delete(key)
                except (StoreError, OSError) as e:
                    self._error(i, e)
                with self._meta:
                    self._lru[i].pop(key, None)
        if self._spill is not None:
            with self._spill_lock:
                if self._spill.contains(key) and key not in self._spilled:
                    self._spill.delete(key)

    def _error(self, i: int | str, e: BaseException) -> None:
        name = i if isinstance(i, str) else self.names[i]
        log.warning("tier %s failed: %s", name, e)
        with self._meta:
            self._stats.bump("errors", name)

    def _wait_for_room(self) -> None:
        """Backpressure: wait while the write-behind area is full (never on the worker)."""
        if threading.get_ident() == self._worker_ident:
            return
        wb = self.config.write_behind
        deadline = None if wb.put_timeout_s is None else time.monotonic() + wb.put_timeout_s
        with self._cond:
            waited = False
            while len(self._pending) >= wb.max_items or self._pending_bytes >= wb.max_bytes:
                waited = True
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise StoreFullError(
                        f"write-behind area full for {wb.put_timeout_s}s "
                        f"({len(self._pending)} blocks, {self._pending_bytes} bytes)"
                    )
                self._cond.wait(0.1 if left is None else min(left, 0.1))
            if waited:
                self._stats.put_waits += 1

    def _write(self, i: int, key: BlockKey, data: Data, gen: int, *, sync: bool) -> None:
        """Make room in tier i, then store the block there. `sync`: victims are moved down
        synchronously (worker, durable path) instead of being staged for the worker."""
        quantize = getattr(getattr(self.tiers[i], "config", None), "quantize", "none")
        if quantize != "none":  # lossy cold tier: store the compressed encoding
            data = fmt.transcode(data.to_bytes() if isinstance(data, fmt.EncodedBlock) else data, quantize)
        size = data_len(data)
        with self._tier_locks[i]:
            self._make_room(i, size, sync=sync, keep=key)
            self.tiers[i].put(key, data)
            stale = False
            with self._meta:
                entry = self._entries.get(key)
                if entry is None or entry.gen != gen:
                    stale = True
                else:
                    entry.tiers.add(i)
                    self._lru[i][key] = size
                    self._lru[i].move_to_end(key)
            if stale:  # dropped or overwritten while we wrote
                self.tiers[i].delete(key)

    def _make_room(self, i: int, size: int, *, sync: bool, keep: BlockKey) -> None:
        """Tier lock i held. Evict LRU blocks of tier i until `size` more bytes fit."""
        tier = self.tiers[i]
        last = i == len(self.tiers) - 1
        pinned = self._leases.pinned() if i == 0 else set()
        while tier.nbytes() + size > tier.budget_bytes:
            with self._meta:
                victim = next((k for k in self._lru[i] if k != keep and k not in pinned), None)
                if victim is None:
                    victim = next((k for k in tier.keys() if k != keep and k not in pinned), None)
                    if victim is None:
                        raise _NoRoom(f"tier {tier.name}: cannot make room for {size} bytes (leased blocks)")
                entry = self._entries.get(victim)
                colder = entry is not None and (
                    any(j > i for j in entry.tiers)
                    or (victim in self._pending and self._pending[victim].dst > i)
                    or victim in self._spilled
                )
            if entry is None or colder:
                self._evict_copy(i, victim, demoted=entry is not None)
                continue
            dst = None if last else self._fit(i + 1, tier.size_of(victim) or 0)
            if dst is None:  # last tier, or too big for every colder one: dropped
                self._evict_copy(i, victim, demoted=False)
                with self._meta:
                    if not entry.tiers and victim not in self._pending and victim not in self._spilled:
                        self._forget(victim)
                        self._stats.evictions += 1
                continue
            data = tier.get(victim)
            if data is None:  # vanished underneath us (e.g. Redis TTL)
                self._evict_copy(i, victim, demoted=False)
                continue
            if sync:
                try:
                    self._write(dst, victim, data, entry.gen, sync=True)
                except (StoreError, OSError) as e:  # colder tier down: stage instead of losing it
                    self._error(dst, e)
                    self._stage(victim, data, entry.gen, dst, backoff=True)
            else:
                self._stage(victim, data, entry.gen, dst)
            self._evict_copy(i, victim, demoted=True)

    def _evict_copy(self, i: int, key: BlockKey, *, demoted: bool) -> None:
        self.tiers[i].delete(key)
        with self._meta:
            self._drop_copy(key, i)
            if demoted:
                self._stats.bump("demotions", self.names[i])

    def _stage(self, key: BlockKey, data: Data, gen: int, dst: int, *, backoff: bool = False) -> None:
        with self._cond:
            entry = self._entries.get(key)
            if entry is None or entry.gen != gen:
                return
            old = self._pending.pop(key, None)
            if old is not None:
                self._pending_bytes -= old.size
            size = data_len(data)
            nb = time.monotonic() + self.config.write_behind.retry_backoff_s if backoff else 0.0
            self._pending[key] = _Pending(data, gen, dst, size, not_before=nb)
            self._pending_bytes += size
            self._stats.pending_high_water = max(self._stats.pending_high_water, self._pending_bytes)
            self._cond.notify_all()

    def _promote(self, key: BlockKey, data: Data, gen: int) -> None:
        """Copy a block read from a colder tier into tier 0 (victims staged, never waited on)."""
        on_worker = threading.get_ident() == self._worker_ident
        wb = self.config.write_behind
        with self._meta:
            entry = self._entries.get(key)
            if entry is None or entry.gen != gen or 0 in entry.tiers:
                return
            if not on_worker and (len(self._pending) >= wb.max_items or self._pending_bytes >= wb.max_bytes):
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

    def _persist_warm(self) -> None:
        """Copy blocks whose only copies are in non-durable tiers into the first durable tier
        (most recently used first, so the budget keeps the freshest)."""
        d = next((i for i, t in enumerate(self.tiers) if t.durable), None)
        if d is None:
            return
        with self._meta:
            todo = [
                (k, e.gen, i)
                for i, t in enumerate(self.tiers[:d])
                for k in reversed(self._lru[i])
                if (e := self._entries.get(k)) is not None and k not in self._spilled
                and not any(self.tiers[j].durable for j in e.tiers)
            ]
        room = self.tiers[d].budget_bytes
        for key, gen, i in todo:
            data = self.tiers[i].get(key)
            if data is None or len(data) > room:
                continue
            room -= len(data)
            try:
                self._write(d, key, data, gen, sync=True)
            except (StoreError, OSError) as e:
                self._error(d, e)

    # ------------------------------------------------------------------ background worker
    def _run(self) -> None:
        self._worker_ident = threading.get_ident()
        while True:
            with self._cond:
                job = None
                while job is None:
                    if self._prefetch:
                        key = self._prefetch.popleft()
                        self._prefetch_set.discard(key)
                        job = ("prefetch", key, None)
                        break
                    now = time.monotonic()
                    ready = next(((k, p) for k, p in self._pending.items() if p.not_before <= now), None)
                    if ready is not None:
                        ready[1].in_flight = True
                        job = ("land", ready[0], ready[1])
                        break
                    if self._spilled and self._spill_retry_at <= now:
                        job = ("unspill", None, None)
                        break
                    if self._stop:
                        return
                    self._cond.wait(0.05 if self._pending or self._spilled else None)
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
                        job[2].not_before = time.monotonic() + self.config.write_behind.retry_backoff_s
                    elif job[0] == "unspill":
                        self._spill_retry_at = time.monotonic() + self.config.write_behind.retry_backoff_s
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _land(self, key: BlockKey, p: _Pending) -> None:
        """Write a staged block into its destination tier (or the next one that works)."""
        with self._meta:
            entry = self._entries.get(key)
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
            if self._pending.get(key) is p:
                if done:
                    self._pending.pop(key)
                    self._pending_bytes -= p.size
                    with self._meta:
                        entry = self._entries.get(key)
                        if entry is not None and entry.gen == p.gen and not entry.tiers \
                                and key not in self._spilled:  # nowhere to go
                            self._forget(key)
                            self._stats.evictions += 1
                else:  # every colder tier failed: keep it readable here, retry later
                    p.in_flight = False
                    p.not_before = time.monotonic() + self.config.write_behind.retry_backoff_s
                    self._pending.move_to_end(key)
            self._cond.notify_all()

    def _read_raw(self, key: BlockKey, entry: _Entry) -> Data:
        """Verified encoded bytes of a block from its warmest copy (raises if none is readable)."""
        for _attempt in range(len(self.tiers) + 2):
            with self._meta:
                src = self._locate(key, entry)
                data = self._pending[key].data if src == PENDING else None
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

    def _do_prefetch(self, key: BlockKey) -> None:
        with self._meta:
            entry = self._entries.get(key)
            if entry is None or 0 in entry.tiers:
                return
        try:
            data = self._read_raw(key, entry)
        except StoreError:
            return
        self._promote(key, data, entry.gen)
        with self._meta:
            self._stats.prefetched += 1

    # ------------------------------------------------------------------ recovery
    def _recover(self) -> None:
        """Re-index blocks of this fingerprint already held by durable tiers (oldest first)."""
        for i, tier in enumerate(self.tiers):
            try:
                found = list(tier.scan(self.fingerprint))
            except (StoreError, OSError) as e:  # down at start: the auditor scans it once it is back
                self._error(i, e)
                self._unscanned.add(i)
                continue
            for key, size in found:
                entry = self._entries.get(key)
                if entry is None:
                    entry = self._read_index_entry(i, key, size)
                    if entry is None:
                        continue
                    self._entries[key] = entry
                    self._streams.setdefault(key.stream_id, set()).add(key.index)
                    self._stats.recovered += 1
                entry.tiers.add(i)
                self._lru[i][key] = size
        if self._spill is not None and self._durable_tier is not None:
            self._recover_spill(self._spill, self._durable_tier)
        for i, tier in enumerate(self.tiers):  # budgets may have shrunk since the last run
            if tier.nbytes() > tier.budget_bytes:
                with self._tier_locks[i]:
                    self._make_room(i, 0, sync=True, keep=BlockKey("", "", -1))

    def _read_index_entry(self, i: int | str, key: BlockKey, size: int) -> _Entry | None:
        tier = self._tier(i)
        try:
            head = tier.read(key, 0, _HEAD_READ)
            if head is None:
                return None
            header = fmt.read_header(head)
            sec = header.sections["rep_keys"]
            need = header.payload_start + sec.offset + sec.nbytes
            if len(head) < need:
                head = tier.read(key, 0, need)
            rep = fmt.decode_section(head, header, "rep_keys", copy=True)
        except CorruptBlockError as e:
            log.warning("unreadable block %s in tier %s at recovery: %s", key, tier.name, e)
            self._stats.corrupt += 1
            return None
        except (StoreError, OSError) as e:
            self._error(i, e)
            return None
        if (header.stream_id, header.index, header.fingerprint) != (
            key.stream_id,
            key.index,
            key.fingerprint,
        ):
            log.warning("block %s in tier %s has a mismatched header; ignored", key, tier.name)
            self._stats.corrupt += 1
            return None
        return _Entry(
            gen=next(self._gens),
            size=size,
            t_start=header.t_start,
            t_end=header.t_end,
            rep_keys=rep,
            acked=True,
        )
