"""Redis (the cold tier) stopped and restarted during a stream: questions keep being answered
from the warm tiers (and say so), writes queue and are retried, the cold tier catches up when
Redis returns; `/ready` reports the cold tier's health. Real redis-server on 127.0.0.1."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from streamvqa.server.app import create_app
from streamvqa.server.settings import ServerSettings
from streamvqa.workers.multi.facade import MultiEngine
from tests.multiproc.conftest import TINY, frames, prefix, start_cluster, stop_cluster, wait_until
from tests.multiproc.test_processes import _read
from tests.store.conftest import start_redis

AOF = ("--save", "", "--appendonly", "yes", "--appendfsync", "always")  # data survives a restart


class RedisCtl:
    """A redis-server we can stop and start again on the same port and data directory."""

    def __init__(self, directory) -> None:
        self.dir = directory
        self.proc, self.url = start_redis(directory, *AOF)
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)

    def start(self) -> None:
        self.proc, _ = start_redis(self.dir, *AOF, port=self.port)

    def keys(self) -> int:
        c = redis.Redis.from_url(self.url)
        try:
            return int(c.dbsize())
        finally:
            c.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def redis_ctl(tmp_path_factory) -> Iterator[RedisCtl]:
    ctl = RedisCtl(tmp_path_factory.mktemp("redis-mp"))
    try:
        yield ctl
    finally:
        ctl.kill()


@pytest.fixture(scope="module")
def cold_cluster(redis_ctl) -> Iterator[MultiEngine]:
    """host RAM holds about two blocks; everything older lives in Redis (write-behind)."""
    store = {"tiers": [{"kind": "host", "budget_bytes": 25_000, "shm_prefix": prefix("r")},
                       {"kind": "redis", "url": redis_ctl.url, "budget_bytes": 64 << 20, "socket_timeout_s": 1.0}],
             "write_behind": {"retry_backoff_s": 0.2},
             "audit_interval_s": 3600.0}  # Redis's losses are found by the reads that miss
    engine = start_cluster(store)
    try:
        yield engine
    finally:
        stop_cluster(engine)


def drained(engine: MultiEngine) -> bool:
    h = engine.health()
    return not h["degraded"] and h["pending_items"] == 0


@pytest.mark.slow
def test_redis_down_and_back_during_a_stream(cold_cluster, redis_ctl):
    engine = cold_cluster
    session = engine.open_stream("rd", "rekv", {})
    clip = frames(10, seed=5)
    try:
        for i in range(6):
            session.push_frame(clip[i], float(i))
        assert wait_until(lambda: drained(engine), 30)
        in_redis = engine.store.usage("rd").blocks.get("redis", 0)
        assert in_redis >= 3, engine.store.usage("rd")
        full = session.answer("what is shown?", max_tokens=8)
        assert "unavailable" not in full.tiers and full.degraded == []

        redis_ctl.stop()
        assert wait_until(lambda: "redis" in engine.health()["degraded"], 30)
        for i in range(6, 10):  # the stream goes on: demoted blocks queue for Redis
            session.push_frame(clip[i], float(i))
        assert session.acked == 10
        h = engine.health()
        assert h["ok"] and "redis" in h["degraded"] and h["pending_items"] >= 1
        usage = engine.store.usage("rd").blocks
        only_cold = 10 - usage["host"] - usage["pending"]  # readable only from Redis
        assert only_cold >= 1
        warm = session.answer("what is shown?", max_tokens=8)  # answered from what is warm
        assert warm.degraded == ["redis"]
        assert warm.tiers["unavailable"] == only_cold
        assert sum(v for k, v in warm.tiers.items() if k != "unavailable") >= 1

        redis_ctl.start()
        assert wait_until(lambda: drained(engine), 60), engine.health()
        usage = engine.store.usage("rd").blocks
        assert usage.get("pending", 0) == 0 and usage.get("redis", 0) + usage.get("host", 0) >= 10
        assert redis_ctl.keys() >= 10 - usage.get("host", 0)
        back = session.answer("what is shown?", max_tokens=8)
        assert back.degraded == [] and "unavailable" not in back.tiers
        assert len(_read(engine, "rd", list(range(10)))) == 10  # every block readable again
    finally:
        engine.close_stream("rd")


@pytest.mark.slow
def test_blocks_lost_with_redis_degrade_the_answer(cold_cluster, redis_ctl):
    """FLUSHALL while blocks live only in Redis: they are gone for good. The first question
    reads one of them (listed, then missing: the store finds every loss at that miss), is asked
    again over what is left and says what is missing (never a 500); the index stops listing
    the lost blocks, and the stream goes on."""
    engine = cold_cluster
    session = engine.open_stream("lo", "rekv", {})
    clip = frames(8, seed=6)
    try:
        for i in range(6):
            session.push_frame(clip[i], float(i))
        assert wait_until(lambda: drained(engine), 30)
        warm = [i for i in range(6) if _tier(engine, "lo", i) == "host"]
        lost = [i for i in range(6) if i not in warm]
        assert warm and lost
        redis.Redis.from_url(redis_ctl.url).flushall()
        assert engine.store.index("lo").indices == list(range(6))  # not noticed yet (no read)
        answer = session.answer("what is shown?", max_tokens=6)
        assert answer.token_ids and "lost_blocks" in answer.degraded
        assert answer.tiers["unavailable"] == len(lost)
        missing = sorted(e["t_start"] for e in answer.evidence_scores if e.get("missing"))
        assert missing == [float(i) for i in lost]  # the lost blocks' times (one frame each)
        assert engine.store.index("lo").indices == warm
        for i in range(6, 8):
            session.push_frame(clip[i], float(i))
        assert engine.store.index("lo").indices == warm + [6, 7]
    finally:
        engine.close_stream("lo")


def _tier(engine: MultiEngine, stream: str, index: int) -> str | None:
    engine.store.index(stream)
    return engine.store.tier_of(stream, index)


@pytest.mark.slow
def test_ready_reports_cold_tier_in_embedded_mode(redis_ctl, tmp_path):
    """Operators configure tiers with STREAMVQA_STORE_*; /ready shows the cold tier's health."""
    settings = ServerSettings.from_env({
        "STREAMVQA_MODEL": TINY, "STREAMVQA_AUTH": "off", "STREAMVQA_THREADS": "1",
        "STREAMVQA_STORE_HOST_BYTES": str(8 << 20), "STREAMVQA_STORE_REDIS_URL": redis_ctl.url,
        "STREAMVQA_STORE_REDIS_TIMEOUT_S": "1", "STREAMVQA_STORE_SHM_PREFIX": prefix("e"),
        "STREAMVQA_MEDIA_ROOT": tempfile.gettempdir(),
    })
    with TestClient(create_app(settings)) as client:
        ready = wait_until(lambda: client.get("/ready").status_code == 200, 120)
        assert ready
        body = client.get("/ready").json()
        assert body["checks"]["store"]["tiers"]["redis"]["ok"] is True and body["degraded"] == []
        redis_ctl.stop()
        try:
            body = client.get("/ready").json()
            assert body["ready"] is True and "store.redis" in body["degraded"]
            assert body["checks"]["store"]["tiers"]["redis"]["ok"] is False
        finally:
            redis_ctl.start()
        assert wait_until(lambda: client.get("/ready").json()["degraded"] == [], 30)


def test_bad_store_settings_fail_at_the_edge():
    with pytest.raises(ValueError, match="durable"):
        ServerSettings.from_env({"STREAMVQA_STORE_DURABLE": "true"})
    with pytest.raises(ValueError):
        ServerSettings.from_env({"STREAMVQA_STORE_HOST_BYTES": "12"})
    cfg = ServerSettings.from_env({"STREAMVQA_TOPOLOGY": "multi", "STREAMVQA_STORE_DISK_PATH": "/var/kv"})
    assert [t["kind"] for t in cfg.store_config()["tiers"]] == ["host", "disk"]
    # embedded default: a bounded host tier spilling to disk (tests/engine/test_spill.py)
    assert [t["kind"] for t in ServerSettings().store_config()["tiers"]] == ["host", "disk"]
    spill = ServerSettings.from_env({"STREAMVQA_STORE_DURABLE": "true", "STREAMVQA_STORE_REDIS_URL": "redis://h:1/0",
                                     "STREAMVQA_STORE_SPILL_PATH": "/var/spill",
                                     "STREAMVQA_STORE_SPILL_BYTES": str(8 << 20)}).store_config()["spill"]
    assert spill == {"path": "/var/spill", "budget_bytes": 8 << 20}
