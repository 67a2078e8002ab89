"""The store's bookkeeping parts on their own: LRU lists, staging area, prefetch queue, ledger."""

from __future__ import annotations

import time

from streamvqa.store.budgets import LruLists
from streamvqa.store.config import WriteBehindConfig
from streamvqa.store.keys import BlockKey
from streamvqa.store.promotion import PrefetchQueue
from streamvqa.store.tiers.base import SizeLedger
from streamvqa.store.writebehind import Pending, StagingArea


def k(i: int, stream: str = "s") -> BlockKey:
    return BlockKey("fp", stream, i)


def test_lru_lists_order_victims_and_totals():
    lru = LruLists(2)
    for i in range(4):
        lru.add(0, k(i), 10 + i)
    lru.touch(0, k(0))  # used again: now the most recent
    lru.add(0, k(9, "t"), 100, oldest=True)  # recovered: older than anything written since
    assert lru.victim(0, spare={k(9, "t")}) == k(1)
    assert lru.victim(0, spare=set()) == k(9, "t")
    assert lru.newest_first(0) == [k(0), k(3), k(2), k(1), k(9, "t")]
    lru.drop(0, k(2))
    assert lru.totals(0, None) == (10 + 11 + 13 + 100, 4) and lru.totals(0, "t") == (100, 1)
    assert lru.totals(1, None) == (0, 0) and lru.victim(1, set()) is None


def test_staging_area_bounds_retries_and_replacement():
    wb = WriteBehindConfig(max_items=2, max_bytes=100)
    area = StagingArea()
    area.put(k(0), Pending(b"x" * 30, gen=1, dst=1, size=30))
    area.put(k(1), Pending(b"x" * 30, gen=1, dst=1, size=30))
    assert area.full(wb) and len(area) == 2 and area.nbytes == 60
    area.put(k(1), Pending(b"x" * 50, gen=2, dst=1, size=50))  # replaced, not added
    assert len(area) == 2 and area.nbytes == 80 and area.get(k(1)).gen == 2
    p = area.get(k(0))
    area.retry_later(k(0), p, backoff_s=60)
    assert area.ready(time.monotonic())[0] == k(1)  # k(0) waits for its backoff
    assert area.totals("s") == (80, 2)
    assert area.pop(k(1)).gen == 2 and area.nbytes == 30 and not area.full(wb)
    assert area.ready(time.monotonic()) is None and area.ready(time.monotonic() + 61)[0] == k(0)


def test_prefetch_queue_is_fifo_without_duplicates():
    q = PrefetchQueue()
    assert [q.push(k(i)) for i in (1, 2, 1)] == [True, True, False]
    assert (q.pop(), len(q)) == (k(1), 1)
    assert q.push(k(1))  # queued again once taken
    assert [q.pop(), q.pop(), q.pop()] == [k(2), k(1), None]


def test_size_ledger_counts_replacements_and_forgets_once():
    ledger = SizeLedger()
    ledger.record(k(0), 10)
    ledger.record(k(1), 20)
    ledger.record(k(0), 15)  # rewritten: counted once, at its new size
    assert (ledger.nbytes(), ledger.size_of(k(0)), sorted(ledger.keys())) == (35, 15, [k(0), k(1)])
    assert ledger.forget([k(0), k(0), k(5)]) == 1
    assert (ledger.nbytes(), ledger.contains(k(0)), ledger.contains(k(1))) == (20, False, True)
