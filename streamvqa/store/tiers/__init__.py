"""Storage tiers: byte stores for encoded blocks behind one small interface (`Tier`)."""

from __future__ import annotations

from streamvqa.store.tiers.base import Tier
from streamvqa.store.tiers.disk import DiskTier
from streamvqa.store.tiers.host import HostTier
from streamvqa.store.tiers.redis_tier import RedisTier


def build_tier(config) -> Tier:
    """A tier from its config (`HostTierConfig`, `DiskTierConfig` or `RedisTierConfig`)."""
    kinds = {"host": HostTier, "disk": DiskTier, "redis": RedisTier}
    return kinds[config.kind](config)


__all__ = ["Tier", "HostTier", "DiskTier", "RedisTier", "build_tier"]
