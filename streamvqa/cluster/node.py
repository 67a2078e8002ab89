"""This replica in the cluster: its lease, its streams in the directory, adoption of the streams
of replicas whose lease ran out, and a clean hand-over at shutdown.

The lease is renewed by a thread of its own every third of the lease (``renew_s``), so a busy
event loop (a long forward, a GC pause) does not hand the streams to another replica. One loop
on the event loop, every ``renew_s``:
1. check the lease (compare-and-renew); lost (Redis restarted empty, or we stalled past the
   lease): take it again and publish our streams again; a stream another replica adopted meanwhile
   is stopped here (the ``PUBLISH`` script refuses to overwrite its record: fencing);
2. publish every local stream (state, memory bytes) and this replica's load;
3. look for streams whose owner has no lease and claim a share of them (``CLAIM``: one winner).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis

from streamvqa.proto import ApiError, StreamCreate

from .config import ClusterConfig
from .directory import Directory, ReplicaInfo, StreamRecord
from .metrics import ClusterMetrics
from .resume import prepare

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdoptedBy:
    """The principal an adopted stream is re-created with: its original key, no quota (the
    stream was admitted once already)."""

    owner: str | None
    name: str = "adopted"


class Node:
    def __init__(self, state: Any, config: ClusterConfig) -> None:
        self.state = state
        self.cfg = config
        self.me = config.replica_id
        self.dir = Directory(config.redis_url, config.replica_id, config.lease_ms, config.prefix)
        self.metrics = ClusterMetrics(state.registry, config.replica_id, config.advertise_url)
        self.member = False  # holds its lease: /ready says so
        self._meta: dict[str, tuple[float, int]] = {}  # stream -> (created_at, epoch) of adopted streams
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._adopting: set[str] = set()
        self.last_replicas: list[ReplicaInfo] = []
        self._holds_lease = False
        self._halt = threading.Event()
        self._renewer = threading.Thread(target=self._renew_loop, name="cluster-lease", daemon=True)

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="cluster-node")
        self._renewer.start()

    def _renew_loop(self) -> None:
        while not self._halt.wait(self.cfg.renew_s):
            if not self._holds_lease:
                continue
            try:
                ok = self.dir.renew_sync()
            except redis.RedisError:
                continue  # the tick notices the directory is gone; the lease may still hold
            if not ok:
                self._holds_lease = False

    async def _run(self) -> None:
        await self.state.loaded.wait()
        reg = self.state.streams
        if reg is None:  # the model failed to load: never joins
            return
        reg.listeners.append(self)
        reg.cluster_quota = self.check_quota
        self.state.question_limiter = ClusterLimiter(self.dir, self.state.question_limiter)
        while not self._stopping:
            try:
                await self.tick()
            except (redis.RedisError, OSError) as e:
                if self.member:
                    log.warning("cluster: directory unreachable (%s); not ready until it answers", e)
                self.member = False
            except Exception:  # a tick must never end the loop
                log.exception("cluster tick")
            await asyncio.sleep(self.cfg.renew_s)

    async def stop(self) -> None:
        """Shutdown: stop the local streams without deleting their blocks or records, then give
        up the lease, so a survivor adopts them at once instead of after the lease."""
        self._stopping = True
        self._halt.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        reg = self.state.streams
        if reg is not None and self.member:
            for entry in reg.list():
                with contextlib.suppress(Exception):
                    await self.dir.update(entry.id, state="handing-over")
                await reg.detach(entry.id)
        with contextlib.suppress(Exception):
            await self.dir.resign()
        await self.dir.close()

    # -- registry listener (on the event loop; sync Redis so a created stream is in the directory
    #    before its id reaches the client) -------------------------------------------------------
    def record_of(self, entry: Any) -> StreamRecord:
        created_at, epoch = self._meta.get(entry.id, (entry.created_at, 0))
        return StreamRecord(
            id=entry.id, replica=self.me, owner=entry.owner or "", url=entry.url, method=entry.method,
            fps=entry.fps, name=entry.name or "", options=dict(entry.options or {}),
            state=str(entry.ingest_stats().state), created_at=created_at, epoch=epoch,
            memory_bytes=entry.memory_bytes())

    def stream_added(self, entry: Any) -> None:
        try:
            self.dir.publish_sync(self.record_of(entry))
        except redis.RedisError as e:  # the next tick publishes it
            log.warning("cluster: stream %s not in the directory yet: %s", entry.id, e)

    def stream_removed(self, entry: Any) -> None:
        self._meta.pop(entry.id, None)
        if self._stopping:
            return
        try:
            self.dir.remove_sync(entry.id, entry.owner or "")
        except redis.RedisError as e:
            log.warning("cluster: stream %s stays in the directory: %s", entry.id, e)

    # -- quotas across replicas ------------------------------------------------------------------
    def check_quota(self, owner: str, quota: Any) -> None:
        """The key's live streams and memory over every replica (the registry's own count if the
        directory does not answer)."""
        try:
            live, used = self.dir.owner_usage(owner)
        except redis.RedisError:
            mine = self.state.streams.list(owner)
            live, used = sum(1 for e in mine if e.is_live()), sum(e.memory_bytes() for e in mine)
        max_streams = getattr(quota, "max_streams", None)
        if max_streams is not None and live >= max_streams:
            raise ApiError("quota_exceeded", f"at most {max_streams} live streams for this API key")
        max_memory = getattr(quota, "max_memory_bytes", None)
        if max_memory is not None and used >= max_memory:
            raise ApiError("quota_exceeded", f"this API key's streams hold {used} bytes; quota {max_memory}")

    # -- the loop --------------------------------------------------------------------------------
    def local_load(self) -> tuple[int, float]:
        entries = self.state.streams.list()
        live = [e for e in entries if e.is_live()]
        lag = max((float(e.ingest_stats().encode_lag_s or 0.0) for e in live), default=0.0)
        return len(live), lag

    async def tick(self) -> None:
        reg = self.state.streams
        if not (self._holds_lease and await self.dir.renew()):
            self._holds_lease = False
            if not await self.dir.register(self.cfg.advertise_url):
                log.error("cluster: another live replica is named %r; not joining", self.me)
                self.member = False
                return
            if self.member:
                log.warning("cluster: lease lost and taken again; publishing the streams again")
            self._holds_lease = True
            self.metrics.registrations.inc()
        for entry in reg.list():  # also re-creates records a Redis without persistence lost
            if entry.id in self._adopting:
                continue
            if not await asyncio.to_thread(self.dir.publish_sync, self.record_of(entry)):
                log.warning("cluster: stream %s was adopted by another replica; stopping it here", entry.id)
                self.metrics.fenced.inc()
                self._meta.pop(entry.id, None)
                await reg.detach(entry.id)
        streams, lag = self.local_load()
        await self.dir.report_load(self.cfg.advertise_url, streams, lag)
        self.member = True
        await self.adopt_orphans()

    async def adopt_orphans(self) -> None:
        records = await self.dir.streams()
        replicas = await self.dir.replicas()
        self.last_replicas = replicas
        alive = {r.id for r in replicas if r.alive} | {self.me}
        orphans = [r for r in records if r.replica not in alive and r.id not in self._adopting]
        owners = {r.replica for r in records}
        for r in replicas:  # a dead replica that owns nothing leaves the listing
            if not r.alive and r.id not in owners:
                await self.dir.forget_replica(r.id)
        if not orphans:
            return
        # spread the orphans: each survivor claims its share per tick, the least loaded first
        share = math.ceil(len(orphans) / max(1, len(alive)))
        live, _ = self.local_load()
        await asyncio.sleep(random.uniform(0, 0.2) + 0.1 * live)
        random.shuffle(orphans)
        taken = 0
        for rec in orphans:
            if taken >= share or live + taken >= self.cfg.max_streams:
                break
            if await self.dir.alive(rec.replica):
                continue
            epoch = await self.dir.claim(rec.id, rec.replica)
            if not epoch:
                continue  # another survivor won it
            taken += 1
            await self.adopt(rec, epoch)

    async def adopt(self, rec: StreamRecord, epoch: int) -> None:
        """Open the claimed stream here: session rebuilt from the store, the source reopened at
        live. A stream that cannot be reopened leaves the directory (its memory is kept in Redis
        until the blocks' TTL, if any)."""
        started = time.monotonic()
        reg = self.state.streams
        if rec.url.startswith("whip:"):  # a WebRTC peer was connected to the dead replica
            log.warning("cluster: WHIP stream %s ended with replica %s", rec.id, rec.replica)
            await self.dir.remove(rec.id, rec.owner)
            self.metrics.adoptions.labels(result="whip_ended").inc()
            return
        self._meta[rec.id] = (rec.created_at, epoch)
        self._adopting.add(rec.id)
        try:
            from streamvqa.server.sources import precheck_source

            precheck_source(rec.url, reg.policy)
            req = StreamCreate(url=rec.url, fps=rec.fps, method=rec.method, options=rec.options or None,
                               name=rec.name or None)
            report: dict[str, Any] = {}
            entry = await reg.create(req, principal=AdoptedBy(rec.owner or None), stream_id=rec.id,
                                     prepare=prepare(self.state.engine, rec.created_at, report))
            entry.created_at = rec.created_at
        except (ApiError, ValueError) as e:
            log.warning("cluster: stream %s of %s could not be adopted: %s", rec.id, rec.replica, e)
            self._meta.pop(rec.id, None)
            await self.dir.remove(rec.id, rec.owner)
            self.metrics.adoptions.labels(result="failed").inc()
            return
        finally:
            self._adopting.discard(rec.id)
        seconds = time.monotonic() - started
        # what the move cost, for /v1/cluster: stream time between the last block the dead replica
        # stored and where ingest resumed (frames of that gap are lost)
        gap = (report.get("resume_t") or 0.0) - (report.get("last_t") or 0.0)
        with contextlib.suppress(redis.RedisError):
            await self.dir.update(rec.id, adopted_from=rec.replica, adopted_blocks=report.get("blocks", 0),
                                  adopted_last_t=report.get("last_t"), adopted_resume_t=report.get("resume_t"),
                                  adopted_gap_s=f"{max(0.0, gap):.3f}", adopted_at=f"{time.time():.3f}")
        self.metrics.adoptions.labels(result="adopted").inc()
        self.metrics.adoption_seconds.observe(seconds)
        log.info("cluster: adopted stream %s from %s (epoch %d) in %.2fs", rec.id, rec.replica, epoch, seconds)


class ClusterLimiter:
    """Questions per minute per API key on a token bucket in Redis (every replica draws from it);
    the in-process limiter while Redis does not answer."""

    def __init__(self, directory: Directory, fallback: Any) -> None:
        self.dir = directory
        self.fallback = fallback

    def take(self, key: str, per_minute: int | None) -> bool:
        if per_minute is None:
            return True
        try:
            return self.dir.take_question(key, per_minute)
        except redis.RedisError:
            return self.fallback.take(key, per_minute)
