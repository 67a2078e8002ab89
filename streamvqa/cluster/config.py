"""The cluster's settings, derived once from :class:`~streamvqa.server.settings.ServerSettings`."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any


def check_settings(settings: Any) -> None:
    """What failover needs when the cluster is on (``ValueError`` names the missing setting):
    the embedded topology, and every block acknowledged in the shared Redis (a survivor answers
    from the blocks the dead replica wrote there)."""
    if settings.topology != "embedded":
        raise ValueError("cluster_redis_url: a cluster of replicas runs the embedded topology")
    if not settings.store.redis_url:
        raise ValueError("cluster_redis_url needs store_redis_url (the streams' memory must be shared)")
    if not settings.store.durable:
        raise ValueError("cluster_redis_url needs store_durable=true (blocks must reach Redis before they count)")


@dataclass(frozen=True)
class ClusterConfig:
    redis_url: str
    replica_id: str
    advertise_url: str
    lease_ms: int
    admin_keys: frozenset[str]
    max_streams: int
    prefix: str = "svqa-cluster"

    @property
    def renew_s(self) -> float:
        """A renewal every third of the lease: two may fail before the lease runs out."""
        return self.lease_ms / 3000.0

    @classmethod
    def from_settings(cls, settings: Any) -> ClusterConfig:
        host = socket.gethostname()
        return cls(
            redis_url=settings.cluster_redis_url,
            replica_id=settings.replica_id or host,
            advertise_url=(settings.advertise_url or f"http://{host}:{settings.port}").rstrip("/"),
            lease_ms=int(settings.cluster_lease_s * 1000),
            admin_keys=frozenset(k.strip() for k in settings.cluster_admin_keys.split(",") if k.strip()),
            max_streams=settings.max_streams,
        )
