"""Replicas of the server sharing one Redis (docs/scaling.md): a stream directory with leases,
forwarding to a stream's owner, placement of new streams, adoption of a dead replica's streams.

``mount(app, state)`` is the whole hook into the server: it does nothing unless
``cluster_redis_url`` is set (one replica keeps today's in-process behaviour)."""

from __future__ import annotations

from .mount import mount

__all__ = ["mount"]
