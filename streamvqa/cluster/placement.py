"""Where a new stream goes: the live replica with the most room, by its live streams, then its
encode lag (seconds its slowest stream's encoding trails ingest); ties stay on the receiver
(no hop). Stream counts come from the directory's records (written as a stream is created, so
back-to-back creates spread); the lag is what each replica last reported (every ``renew_s``)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from .directory import ReplicaInfo


def rank(replicas: list[ReplicaInfo], me: str, max_streams: int) -> list[ReplicaInfo]:
    """Live replicas with room, best first."""
    ok = [r for r in replicas if r.alive and r.url and r.streams < max_streams]
    return sorted(ok, key=lambda r: (r.streams, round(r.lag_s, 1), r.id != me, r.id))


async def choose(node: Any) -> ReplicaInfo | None:
    """The replica a new stream should go to (None: no directory answer; create here)."""
    replicas = await node.dir.replicas()
    counts = Counter(s.replica for s in await node.dir.streams() if s.live())
    _, lag = node.local_load()
    for r in replicas:
        r.streams = counts.get(r.id, 0)
        if r.id == node.me:
            r.lag_s, r.alive = lag, True
    ranked = rank(replicas, node.me, node.cfg.max_streams)
    return ranked[0] if ranked else None
