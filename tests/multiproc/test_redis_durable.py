"""`store_durable` with Redis as the only durable tier (issue 17, items 4 and 5), real processes
and a real redis-server:

- Redis loses its data (FLUSHALL): the kvstore writes every block it still holds again; a
  following `kill -9` of the kvstore loses no acknowledged block.
- Redis down during a stream: encoding goes on (blocks spill to the run directory), no frame is
  refused; a `kill -9` of the kvstore during the outage loses nothing; when Redis is back the
  spill drains and every block is in Redis.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
import redis

from streamvqa.workers.multi.facade import MultiEngine
from tests.multiproc.conftest import frames, prefix, start_cluster, stop_cluster, wait_until
from tests.multiproc.test_processes import _read
from tests.multiproc.test_redis import RedisCtl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def redis_dur(tmp_path_factory) -> Iterator[RedisCtl]:
    ctl = RedisCtl(tmp_path_factory.mktemp("redis-dur"))
    try:
        yield ctl
    finally:
        ctl.kill()


@pytest.fixture(scope="module")
def durable_redis_cluster(redis_dur) -> Iterator[MultiEngine]:
    """host (shm, room for every block of these tests) -> Redis, durable: Redis is the only
    durable tier, so every put is written through to it (or spilled while it is down)."""
    store = {"tiers": [{"kind": "host", "budget_bytes": 64 << 20, "shm_prefix": prefix("dr")},
                       {"kind": "redis", "url": redis_dur.url, "budget_bytes": 64 << 20, "socket_timeout_s": 1.0}],
             "durable": True, "audit_interval_s": 0.2, "write_behind": {"retry_backoff_s": 0.2}}
    engine = start_cluster(store)
    try:
        yield engine
    finally:
        stop_cluster(engine)


def _blocks_in_redis(ctl: RedisCtl, stream: str) -> int:
    c = redis.Redis.from_url(ctl.url)
    try:
        return sum(1 for _ in c.scan_iter(match=f"streamvqa:*:{stream}:*", count=1000))
    finally:
        c.close()


def _kill_store(engine: MultiEngine) -> None:
    sup = engine.supervisor
    restarts = sup.workers["kvstore"].restarts
    sup.kill("kvstore", signal.SIGKILL)
    assert sup.wait_up("kvstore", 120, after_restarts=restarts + 1)


def test_redis_flushall_then_kvstore_kill_loses_nothing(durable_redis_cluster, redis_dur):
    engine = durable_redis_cluster
    session = engine.open_stream("fl", "rekv", {})
    clip = frames(10, seed=11)
    try:
        for i in range(6):
            session.push_frame(clip[i], float(i))
        acked = session.acked
        kept = _read(engine, "fl", list(range(acked)))
        assert acked == 6 and _blocks_in_redis(redis_dur, "fl") == acked
        redis.Redis.from_url(redis_dur.url).flushall()
        answer = session.answer("what is shown?", max_tokens=6)  # warm copies: unaffected
        assert answer.token_ids and "unavailable" not in answer.tiers
        # the store notices and writes what it still holds (host tier) into Redis again
        assert wait_until(lambda: _blocks_in_redis(redis_dur, "fl") == acked, 60)
        _kill_store(engine)
        assert _read(engine, "fl", list(range(acked))) == kept  # recovered from Redis, identical
        for i in range(6, 10):
            session.push_frame(clip[i], float(i))
        assert engine.store.index("fl").indices == list(range(10))
    finally:
        engine.close_stream("fl")


def test_redis_outage_does_not_stop_durable_encoding(durable_redis_cluster, redis_dur):
    engine = durable_redis_cluster
    session = engine.open_stream("ou", "rekv", {})
    clip = frames(12, seed=12)
    try:
        for i in range(3):
            session.push_frame(clip[i], float(i))
        kept = _read(engine, "ou", [0, 1, 2])
        redis_dur.stop()
        assert wait_until(lambda: "redis" in engine.health()["degraded"], 30)
        for i in range(3, 8):  # every frame is taken: no sink_error, no wait on Redis
            session.push_frame(clip[i], float(i))
        assert session.acked == 8
        assert wait_until(lambda: engine.store.health()["tiers"]["spill"]["items"] == 5, 30)
        assert engine.store.health()["tiers"]["spill"]["bytes"] > 0
        kept.update(_read(engine, "ou", list(range(3, 8))))
        _kill_store(engine)  # during the outage: spilled blocks come back from the spill area
        assert set(engine.store.index("ou").indices) >= set(range(3, 8))
        for i in range(8, 10):
            session.push_frame(clip[i], float(i))
        redis_dur.start()
        assert wait_until(lambda: engine.store.health()["tiers"]["spill"]["items"] == 0, 60)
        assert wait_until(lambda: engine.store.index("ou").indices == list(range(10)), 60)
        assert _blocks_in_redis(redis_dur, "ou") == 10
        now = _read(engine, "ou", list(range(8)))
        assert now == kept  # byte-identical after the outage and the kvstore's kill -9
        assert session.answer("what is shown?", max_tokens=6).token_ids
        log = engine.supervisor.log_tail("kvstore", 1 << 22)  # both kvstore processes' output
        assert "BufferError" not in log and "Traceback" not in log
    finally:
        engine.close_stream("ou")
