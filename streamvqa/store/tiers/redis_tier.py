"""Cold/shared tier in Redis: one string per block (header + payload in one value).

One key per block avoids the "metadata present, payload evicted" states of two-key layouts;
writes are `SET key value [EX ttl]`, reads of several blocks go through one pipeline per `batch`
keys. The budget counts the bytes this store wrote (values, not Redis overhead); configure Redis
itself with ``maxmemory`` + ``allkeys-lru`` as a safety net when several nodes share it.
Keys: ``{key_prefix}:{fingerprint}:{quoted stream id}:{index}``.

Data loss (Redis restarted empty, ``FLUSHALL``, eviction) is detected by `lost_data`: the
server's run id and a marker key ``{key_prefix}:~epoch`` (``~`` never occurs in a fingerprint,
so no block scan matches it) are checked; `missing` then names the blocks that are gone.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis

from streamvqa.store.block import Block
from streamvqa.store.config import RedisTierConfig
from streamvqa.store.errors import TierUnavailableError
from streamvqa.store.keys import BlockKey, quote_stream
from streamvqa.store.tiers.base import Data, SizeLedger, as_buffer, as_data


class RedisTier(SizeLedger):
    durable = True  # as durable as the Redis server's persistence settings (survives our crash)

    def __init__(self, config: RedisTierConfig, client: redis.Redis | None = None) -> None:
        super().__init__()
        self.config = config
        self.name = config.name
        self.budget_bytes = config.budget_bytes
        self.client = client or redis.Redis.from_url(
            config.url,
            socket_timeout=config.socket_timeout_s,
            socket_connect_timeout=config.socket_timeout_s,
        )
        self._run_id: str | None = None  # of the server we last checked (None: never checked)

    def redis_key(self, key: BlockKey) -> str:
        return key.to_str(self.config.key_prefix)

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except redis.RedisError as e:
            raise TierUnavailableError(f"redis tier {self.name!r}: {e}") from e

    def put(self, key: BlockKey, data: Data | Block) -> int:
        data = as_data(key, data)
        buf = memoryview(as_buffer(data)).cast("B")
        self._call(lambda: self.client.set(self.redis_key(key), buf, ex=self.config.ttl_s))
        self.record(key, len(buf))
        return len(buf)

    def get(self, key: BlockKey) -> bytes | None:
        return self.get_many([key])[0]

    def get_many(self, keys: list[BlockKey]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for i in range(0, len(keys), self.config.batch):
            chunk = [self.redis_key(k) for k in keys[i : i + self.config.batch]]
            out.extend(self._call(lambda c=chunk: self.client.mget(c)))
        self.forget(k for k, v in zip(keys, out, strict=True) if v is None)  # expired or evicted
        return out

    def read(self, key: BlockKey, offset: int, length: int) -> bytes | None:
        if length <= 0:
            return b""
        pipe = self.client.pipeline(transaction=False)
        pipe.exists(self.redis_key(key))
        pipe.getrange(self.redis_key(key), offset, offset + length - 1)
        exists, data = self._call(pipe.execute)
        return data if exists else None

    def delete(self, key: BlockKey) -> bool:
        self._call(lambda: self.client.delete(self.redis_key(key)))
        return self.forget([key]) == 1

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    @property
    def marker_key(self) -> str:
        return f"{self.config.key_prefix}:~epoch"

    def lost_data(self) -> bool:
        """True when Redis may have lost keys since the last call: its run id changed (a
        restart, possibly without persistence), or the marker key is gone (``FLUSHALL``,
        ``FLUSHDB``, eviction). The first call is a loss too when this tier believes it holds
        blocks (nothing to compare with). Sets the marker again. Raises `TierUnavailableError`."""
        pipe = self.client.pipeline(transaction=False)
        pipe.info("server")
        pipe.set(self.marker_key, b"1", nx=True)  # None: it was there
        info, created = self._call(pipe.execute)
        run_id = str(info.get("run_id", ""))
        with self.ledger_lock:
            known = bool(self.sizes)
            first = self._run_id is None
            changed = self._run_id is not None and run_id != self._run_id
            self._run_id = run_id
        return changed or (bool(created) and not first) or (first and known)

    def missing(self) -> list[BlockKey]:
        """Blocks this tier accounts for that Redis no longer has (forgotten here)."""
        keys = self.keys()
        gone: list[BlockKey] = []
        for i in range(0, len(keys), 256):
            chunk = keys[i : i + 256]
            pipe = self.client.pipeline(transaction=False)
            for k in chunk:
                pipe.exists(self.redis_key(k))
            gone += [k for k, n in zip(chunk, self._call(pipe.execute), strict=True) if not n]
        self.forget(gone)
        return gone

    def scan(self, fingerprint: str, stream_id: str | None = None) -> Iterable[tuple[BlockKey, int]]:
        """Blocks of this fingerprint (and stream) in Redis (adopted into this tier's accounting)."""
        prefix = self.config.key_prefix
        match = f"{prefix}:{fingerprint}:{'*' if stream_id is None else quote_stream(stream_id) + ':*'}"
        names = [
            n.decode() if isinstance(n, bytes) else n
            for n in self._call(lambda: list(self.client.scan_iter(match=match, count=1000)))
        ]
        found = []
        for i in range(0, len(names), 256):
            chunk = names[i : i + 256]
            pipe = self.client.pipeline(transaction=False)
            for n in chunk:
                pipe.strlen(n)
            for n, size in zip(chunk, self._call(pipe.execute), strict=True):
                if size:
                    try:
                        found.append((BlockKey.from_str(n, prefix), int(size)))
                    except ValueError:
                        continue
        found.sort()
        for k, size in found:
            self.record(k, size)
        return found

    def close(self) -> None:
        try:
            self.client.close()
        except redis.RedisError:
            pass
