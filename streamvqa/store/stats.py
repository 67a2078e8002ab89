"""`TieredStore`'s counters (`TieredStore.stats()` returns a snapshot as a dict)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StoreStats:
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

    def snapshot(self) -> dict:
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in vars(self).items()}
