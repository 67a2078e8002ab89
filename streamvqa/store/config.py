"""Configuration of the tiered block store, validated at the edge (pydantic).

Example (host RAM 4 GiB → local disk 64 GiB → Redis 256 GiB, durable writes)::

    TieredStoreConfig(
        fingerprint=model_fingerprint(cfg, weights_id),
        tiers=[
            HostTierConfig(budget_bytes=4 << 30),
            DiskTierConfig(path="/var/lib/streamvqa/kv", budget_bytes=64 << 30),
            RedisTierConfig(url="redis://127.0.0.1:6379/0", budget_bytes=256 << 30, ttl_s=86400),
        ],
        durable=True,
    )
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from streamvqa.store.keys import validate_fingerprint
from streamvqa.store.quant import parse_scheme


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HostTierConfig(_Strict):
    """Warm tier: host RAM in POSIX shared memory, one segment per block."""

    kind: Literal["host"] = "host"
    name: str = "host"
    budget_bytes: int = Field(gt=0)
    shm_prefix: str = Field(default="streamvqa", pattern=r"^[A-Za-z0-9_]{1,24}$")
    verify_reads: bool = False  # host RAM does not rot; CRC on read is for cold tiers


class DiskTierConfig(_Strict):
    """Cold tier: one file per block under `path`, atomic rename, checksum verified on read."""

    kind: Literal["disk"] = "disk"
    name: str = "disk"
    path: Path
    budget_bytes: int = Field(gt=0)
    fsync: bool = False  # fsync file + directory before a write counts as done
    quantize: str = "none"  # "int8-g64": store blocks lossy-compressed here (see store/quant.py)

    @field_validator("quantize")
    @classmethod
    def _quantize(cls, v: str) -> str:
        parse_scheme(v)
        return v


class RedisTierConfig(_Strict):
    """Cold/shared tier: one Redis string per block (header + payload), pipelined."""

    kind: Literal["redis"] = "redis"
    name: str = "redis"
    url: str = "redis://127.0.0.1:6379/0"
    budget_bytes: int = Field(gt=0)
    key_prefix: str = Field(default="streamvqa", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    ttl_s: int | None = Field(default=None, gt=0)
    socket_timeout_s: float = Field(default=5.0, gt=0)
    batch: int = Field(default=32, gt=0)  # keys per pipeline round trip
    quantize: str = "none"  # "int8-g64": store blocks lossy-compressed here (see store/quant.py)

    @field_validator("quantize")
    @classmethod
    def _quantize(cls, v: str) -> str:
        parse_scheme(v)
        return v


TierConfig = Annotated[HostTierConfig | DiskTierConfig | RedisTierConfig, Field(discriminator="kind")]


class WriteBehindConfig(_Strict):
    """Bounded staging area between a tier and the next colder one."""

    max_items: int = Field(default=64, gt=0)
    max_bytes: int = Field(default=256 << 20, gt=0)
    put_timeout_s: float | None = Field(default=None, gt=0)  # None: wait as long as it takes
    retry_backoff_s: float = Field(default=0.5, gt=0)  # after a cold tier failed a write


class SpillConfig(_Strict):
    """Durable stores: where an acknowledged block goes while its durable tier is down (Redis
    outage). Files like a disk tier's; drained into the durable tier when it is back, re-indexed
    after a crash. ``budget_bytes`` bounds the outage a stream rides through without waiting."""

    path: Path
    budget_bytes: int = Field(default=1 << 30, gt=0)
    fsync: bool = False  # as DiskTierConfig.fsync


class TieredStoreConfig(_Strict):
    fingerprint: str  # model (+ KV layout) identity; part of every key
    tiers: list[TierConfig] = Field(min_length=1)  # warmest first
    durable: bool = False  # put writes through to the first durable tier (disk/redis) before acking
    promote_on_get: bool = True  # get_many copies cold blocks back into the warmest tier
    recover: bool = True  # on open, re-index blocks already in durable tiers (this fingerprint)
    persist_on_close: bool = True  # close() copies blocks held only in host RAM to a durable tier
    write_behind: WriteBehindConfig = WriteBehindConfig()
    spill: SpillConfig | None = None  # durable only: local fallback while the durable tier is down
    audit_interval_s: float = Field(default=1.0, gt=0)  # how often Redis is checked for lost data

    @field_validator("fingerprint")
    @classmethod
    def _fingerprint(cls, v: str) -> str:
        return validate_fingerprint(v)

    @model_validator(mode="after")
    def _check(self) -> TieredStoreConfig:
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"tier names must be unique, got {names}")
        if "pending" in names or "spill" in names:
            raise ValueError("'pending' and 'spill' are reserved names (write-behind queue, spill area)")
        hosts = [i for i, t in enumerate(self.tiers) if t.kind == "host"]
        if hosts and hosts != [0]:
            raise ValueError("a host tier must be the first (warmest) tier, and there can be only one")
        if self.durable and not any(t.kind != "host" for t in self.tiers):
            raise ValueError("durable=True needs a disk or redis tier")
        if self.spill is not None and not self.durable:
            raise ValueError("spill is the fallback of durable writes: it needs durable=True")
        return self
