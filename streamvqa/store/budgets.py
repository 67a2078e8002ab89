"""`TieredStore`'s byte budgets: per-tier LRU order, and making room before a tier takes a block.

Before a tier takes a block its least-recently-used blocks make room (leased blocks of the host
tier excepted). A victim that already has a colder copy is simply deleted; otherwise it moves one
tier down, staged for the writer thread (``sync=False``, the put path) or written at once (the
writer, durable path); a victim of the last tier is dropped (counted in ``evictions``).

`LruLists` is the bookkeeping; `BudgetMixin` the policy, a mixin of `TieredStore` (it works on
the store's index, locks and staging area).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Container

from streamvqa.store import format as fmt
from streamvqa.store.errors import StoreError
from streamvqa.store.keys import BlockKey
from streamvqa.store.tiers.base import Data, data_len

NOBODY = BlockKey("", "", -1)  # `keep` when no block is being written


class NoRoomError(StoreError):
    """Every block left in the tier is leased: nothing can be evicted to make room."""


class LruLists:
    """Per tier, the blocks it holds (with their sizes), least recently used first. Guarded by
    the store's metadata lock."""

    def __init__(self, n: int) -> None:
        self._lists: list[OrderedDict[BlockKey, int]] = [OrderedDict() for _ in range(n)]

    def add(self, i: int, key: BlockKey, size: int, *, oldest: bool = False) -> None:
        self._lists[i][key] = size
        self._lists[i].move_to_end(key, last=not oldest)

    def touch(self, i: int, key: BlockKey) -> None:
        self._lists[i].move_to_end(key)

    def drop(self, i: int, key: BlockKey) -> None:
        self._lists[i].pop(key, None)

    def victim(self, i: int, spare: Container[BlockKey]) -> BlockKey | None:
        """The least recently used block of tier i not in `spare`."""
        return next((k for k in self._lists[i] if k not in spare), None)

    def newest_first(self, i: int) -> list[BlockKey]:
        return list(reversed(self._lists[i]))

    def totals(self, i: int, stream_id: str | None) -> tuple[int, int]:
        """(bytes, blocks) tier i holds, for one stream or all."""
        sizes = [s for k, s in self._lists[i].items() if stream_id is None or k.stream_id == stream_id]
        return sum(sizes), len(sizes)


class BudgetMixin:
    def _fit(self, start: int, size: int) -> int | None:
        """First tier from `start` whose budget can hold `size` bytes, None if none can."""
        return next((i for i in range(start, len(self.tiers)) if size <= self.tiers[i].budget_bytes), None)

    def _first_fitting(self, start: int, size: int) -> int:
        i = self._fit(start, size)
        if i is None:
            raise ValueError(f"block of {size} bytes exceeds every tier budget from tier {start}")
        return i

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
                entry = self._index.get(key)
                if entry is None or entry.gen != gen:
                    stale = True
                else:
                    entry.tiers.add(i)
                    self._lru.add(i, key, size)
            if stale:  # dropped or overwritten while we wrote
                self.tiers[i].delete(key)

    def _make_room(self, i: int, size: int, *, sync: bool, keep: BlockKey) -> None:
        """Tier lock i held. Evict LRU blocks of tier i until `size` more bytes fit."""
        tier = self.tiers[i]
        last = i == len(self.tiers) - 1
        spare = (self.leases.pinned() if i == 0 else set()) | {keep}
        while tier.nbytes() + size > tier.budget_bytes:
            with self._meta:
                victim = self._lru.victim(i, spare)
                if victim is None:
                    victim = next((k for k in tier.keys() if k not in spare), None)
                    if victim is None:
                        raise NoRoomError(f"tier {tier.name}: cannot make room for {size} bytes (leased blocks)")
                entry = self._index.get(victim)
                staged = self._staging.get(victim)
                colder = entry is not None and (
                    any(j > i for j in entry.tiers)
                    or (staged is not None and staged.dst > i)
                    or victim in self._spilled
                )
            if entry is None or colder:
                self._evict_copy(i, victim, demoted=entry is not None)
                continue
            dst = None if last else self._fit(i + 1, tier.size_of(victim) or 0)
            if dst is None:  # last tier, or too big for every colder one: dropped
                self._evict_copy(i, victim, demoted=False)
                with self._meta:
                    if not entry.tiers and victim not in self._staging and victim not in self._spilled:
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
