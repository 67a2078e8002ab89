"""The stream directory in Redis: which replica owns which stream, and who is alive.

Keys (``P`` = the prefix, ``svqa-cluster``):

- ``P:alive:{replica}`` — the replica's lease: a random token, ``SET NX PX``; the owner renews it
  with a compare-and-renew script. Gone = the replica is dead (its streams may be adopted).
- ``P:replica:{replica}`` — hash: ``url``, ``streams``, ``lag_s``, ``updated_at``; ``P:replicas``
  the set of names.
- ``P:stream:{id}`` — hash: ``replica`` (owner), ``owner`` (API key name, ``""`` with auth off),
  ``method``, ``options`` (JSON), ``url``, ``fps``, ``name``, ``state``, ``created_at``, ``epoch``
  (bumped at each adoption), ``memory_bytes``; ``P:streams`` the set of ids, ``P:owner:{key}``
  the ids of one API key (quotas across replicas).

Every change that depends on who owns what is one Lua script (atomic in Redis): a stream is
adopted by exactly one survivor, and a replica that lost its lease cannot overwrite a record
that another replica adopted meanwhile. No consensus code of ours: Redis is the arbiter.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1
end
return 0
"""
RESIGN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: stream record, the dead owner's lease; ARGV: dead owner, adopter
CLAIM = """
if redis.call('HGET', KEYS[1], 'replica') ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'replica', ARGV[2], 'state', 'adopting')
return redis.call('HINCRBY', KEYS[1], 'epoch', 1)
"""
# KEYS: stream record; ARGV: replica, then field/value pairs. Only the owner writes its record.
UPDATE = """
if redis.call('HGET', KEYS[1], 'replica') ~= ARGV[1] then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""
# KEYS: stream record, streams set, owner set; ARGV: replica, stream id
REMOVE = """
if redis.call('HGET', KEYS[1], 'replica') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1]) redis.call('SREM', KEYS[2], ARGV[2]) redis.call('SREM', KEYS[3], ARGV[2])
return 1
"""
# KEYS: stream record, streams set, owner set; ARGV: replica, stream id, then field/value pairs.
# Publishes a stream unless another replica holds its record (a lease lost and adopted).
PUBLISH = """
local cur = redis.call('HGET', KEYS[1], 'replica')
if cur and cur ~= ARGV[1] then return 0 end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('SADD', KEYS[2], ARGV[2]) redis.call('SADD', KEYS[3], ARGV[2])
return 1
"""
# token bucket per API key on Redis' clock: KEYS: bucket; ARGV: per minute. 1 = allowed.
BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local cap = tonumber(ARGV[1])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'stamp', 'cap')
local tokens, stamp = tonumber(b[1]), tonumber(b[2])
if tokens == nil or tonumber(b[3]) ~= cap then tokens, stamp = cap, now end
tokens = math.min(cap, tokens + (now - stamp) * cap / 60)
local ok = 0
if tokens >= 1 then tokens = tokens - 1 ok = 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now), 'cap', ARGV[1])
redis.call('PEXPIRE', KEYS[1], 120000)
return ok
"""

FINAL = frozenset({"ended", "failed", "stopped"})


@dataclass
class StreamRecord:
    id: str
    replica: str
    owner: str  # API key name; "" with auth off
    url: str
    method: str
    fps: float
    name: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    state: str = "connecting"
    created_at: float = 0.0
    epoch: int = 0
    memory_bytes: int = 0
    adoption: dict[str, str] = field(default_factory=dict)  # adopted_*: what the last move cost

    def fields(self) -> dict[str, str]:
        d = asdict(self)
        d.pop("adoption")
        d["options"] = json.dumps(self.options, sort_keys=True)
        return {k: str(v) for k, v in d.items()}

    @classmethod
    def parse(cls, raw: dict[bytes, bytes]) -> StreamRecord | None:
        d = {k.decode(): v.decode() for k, v in raw.items()}
        try:
            return cls(id=d["id"], replica=d["replica"], owner=d.get("owner", ""), url=d["url"],
                       method=d["method"], fps=float(d["fps"]), name=d.get("name", ""),
                       options=json.loads(d.get("options") or "{}"), state=d.get("state", ""),
                       created_at=float(d.get("created_at") or 0), epoch=int(d.get("epoch") or 0),
                       memory_bytes=int(d.get("memory_bytes") or 0),
                       adoption={k: v for k, v in d.items() if k.startswith("adopted_")})
        except (KeyError, ValueError):
            return None  # half-written (a Redis that lost part of its data): ignored

    def live(self) -> bool:
        return self.state not in FINAL


@dataclass
class ReplicaInfo:
    id: str
    url: str
    alive: bool
    streams: int = 0
    lag_s: float = 0.0
    updated_at: float = 0.0


class Directory:
    """Async access for the event loop (``redis.asyncio``), plus a sync client for the few checks
    that run inside synchronous server code (quotas, the question rate)."""

    def __init__(self, url: str, replica_id: str, lease_ms: int, prefix: str = "svqa-cluster",
                 timeout_s: float = 1.0) -> None:
        self.me = replica_id
        self.lease_ms = lease_ms
        self.p = prefix
        self.token = secrets.token_hex(16)
        # a pooled connection Redis closed (a restart) is retried on a new one, not reported as an outage
        retry_on = [redis.ConnectionError, redis.TimeoutError]
        self.r = aioredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                         retry=AsyncRetry(ExponentialBackoff(cap=0.2, base=0.02), 3),
                                         retry_on_error=retry_on)
        self.sync = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                         retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 3),
                                         retry_on_error=retry_on)
        self._scripts = {name: self.r.register_script(src) for name, src in
                         (("renew", RENEW), ("resign", RESIGN), ("claim", CLAIM), ("update", UPDATE),
                          ("remove", REMOVE))}
        self._bucket = self.sync.register_script(BUCKET)
        self._publish_sync = self.sync.register_script(PUBLISH)
        self._renew_sync = self.sync.register_script(RENEW)
        self._remove_sync = self.sync.register_script(REMOVE)

    # -- keys ------------------------------------------------------------------------------------
    def alive_key(self, replica: str) -> str:
        return f"{self.p}:alive:{replica}"

    def stream_key(self, stream_id: str) -> str:
        return f"{self.p}:stream:{stream_id}"

    def owner_key(self, owner: str) -> str:
        return f"{self.p}:owner:{owner}"

    # -- this replica's lease ----------------------------------------------------------------------
    async def register(self, url: str) -> bool:
        """Take the lease (False: a live replica of the same name holds it) and announce the URL."""
        if not await self.r.set(self.alive_key(self.me), self.token, nx=True, px=self.lease_ms):
            return await self.renew()
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(f"{self.p}:replica:{self.me}", mapping={"url": url, "updated_at": str(time.time())})
        pipe.sadd(f"{self.p}:replicas", self.me)
        await pipe.execute()
        return True

    async def renew(self) -> bool:
        return bool(await self._scripts["renew"](keys=[self.alive_key(self.me)], args=[self.token, self.lease_ms]))

    def renew_sync(self) -> bool:
        return bool(self._renew_sync(keys=[self.alive_key(self.me)], args=[self.token, self.lease_ms]))

    async def resign(self) -> None:
        await self._scripts["resign"](keys=[self.alive_key(self.me)], args=[self.token])

    async def report_load(self, url: str, streams: int, lag_s: float) -> None:
        await self.r.hset(f"{self.p}:replica:{self.me}", mapping={
            "url": url, "streams": str(streams), "lag_s": f"{lag_s:.3f}", "updated_at": str(time.time())})
        await self.r.sadd(f"{self.p}:replicas", self.me)

    async def replicas(self) -> list[ReplicaInfo]:
        names = sorted(n.decode() for n in await self.r.smembers(f"{self.p}:replicas"))
        if not names:
            return []
        pipe = self.r.pipeline(transaction=False)
        for n in names:
            pipe.hgetall(f"{self.p}:replica:{n}")
            pipe.exists(self.alive_key(n))
        res = await pipe.execute()
        out = []
        for n, raw, alive in zip(names, res[::2], res[1::2], strict=True):
            d = {k.decode(): v.decode() for k, v in raw.items()}
            out.append(ReplicaInfo(n, d.get("url", ""), bool(alive), int(d.get("streams") or 0),
                                   float(d.get("lag_s") or 0), float(d.get("updated_at") or 0)))
        return out

    async def forget_replica(self, replica: str) -> None:
        """A dead replica that owns nothing any more leaves the listing."""
        pipe = self.r.pipeline(transaction=True)
        pipe.srem(f"{self.p}:replicas", replica)
        pipe.delete(f"{self.p}:replica:{replica}")
        await pipe.execute()

    async def alive(self, replica: str) -> bool:
        return bool(await self.r.exists(self.alive_key(replica)))

    # -- streams -----------------------------------------------------------------------------------
    def publish_sync(self, rec: StreamRecord) -> bool:
        """Write this replica's stream (False: another replica holds the record: it adopted it)."""
        flat = [x for kv in rec.fields().items() for x in kv]
        return bool(self._publish_sync(
            keys=[self.stream_key(rec.id), f"{self.p}:streams", self.owner_key(rec.owner)],
            args=[self.me, rec.id, *flat]))

    async def update(self, stream_id: str, **fields: Any) -> bool:
        flat = [x for k, v in fields.items() for x in (k, str(v))]
        return bool(await self._scripts["update"](keys=[self.stream_key(stream_id)], args=[self.me, *flat]))

    async def remove(self, stream_id: str, owner: str) -> bool:
        return bool(await self._scripts["remove"](
            keys=[self.stream_key(stream_id), f"{self.p}:streams", self.owner_key(owner)], args=[self.me, stream_id]))

    def remove_sync(self, stream_id: str, owner: str) -> bool:
        return bool(self._remove_sync(
            keys=[self.stream_key(stream_id), f"{self.p}:streams", self.owner_key(owner)], args=[self.me, stream_id]))

    async def get(self, stream_id: str) -> StreamRecord | None:
        raw = await self.r.hgetall(self.stream_key(stream_id))
        return StreamRecord.parse(raw) if raw else None

    async def streams(self) -> list[StreamRecord]:
        ids = sorted(i.decode() for i in await self.r.smembers(f"{self.p}:streams"))
        if not ids:
            return []
        pipe = self.r.pipeline(transaction=False)
        for i in ids:
            pipe.hgetall(self.stream_key(i))
        out = []
        for i, raw in zip(ids, await pipe.execute(), strict=True):
            rec = StreamRecord.parse(raw) if raw else None
            if rec is None:
                await self.r.srem(f"{self.p}:streams", i)  # removed meanwhile
                continue
            out.append(rec)
        return out

    async def claim(self, stream_id: str, dead: str) -> int:
        """Take over a stream of a replica whose lease ran out: the new epoch, 0 when the record
        changed hands or its owner is alive again (exactly one claimant wins)."""
        return int(await self._scripts["claim"](keys=[self.stream_key(stream_id), self.alive_key(dead)],
                                                args=[dead, self.me]))

    # -- quotas across replicas (sync: called from the registry's checks) ------------------------
    def owner_usage(self, owner: str) -> tuple[int, int]:
        """Live streams and memory bytes of an API key's streams, over every replica."""
        ids = [i.decode() for i in self.sync.smembers(self.owner_key(owner))]
        pipe = self.sync.pipeline(transaction=False)
        for i in ids:
            pipe.hmget(self.stream_key(i), "state", "memory_bytes")
        live = used = 0
        for state, mem in pipe.execute() if ids else []:
            if state is None:
                continue
            live += state.decode() not in FINAL
            used += int(mem or 0)
        return live, used

    def take_question(self, owner: str, per_minute: int) -> bool:
        return bool(self._bucket(keys=[f"{self.p}:bucket:{owner}"], args=[per_minute]))

    async def close(self) -> None:
        await self.r.aclose()
        self.sync.close()
