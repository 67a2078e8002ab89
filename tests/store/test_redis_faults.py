"""Redis faults under a durable store (issue 17, items 4 and 5), with a real redis-server:

- Redis loses its data (FLUSHALL, or a restart without persistence): the store notices, writes
  the blocks it still holds elsewhere again, and never claims a block it does not have; a
  SIGKILL of the store afterwards loses no acknowledged block.
- Redis down: durable puts go on into the spill area (no error, no wait), which drains into
  Redis when it is back and is recovered after a SIGKILL.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal

import pytest
import redis

from streamvqa.store.config import (
    HostTierConfig,
    RedisTierConfig,
    SpillConfig,
    TieredStoreConfig,
    WriteBehindConfig,
)
from streamvqa.store.errors import BlockNotFoundError
from streamvqa.store.keys import BlockKey
from streamvqa.store.tiered import TieredStore
from tests.helpers import wait_until
from tests.store.conftest import SHM_PREFIX, start_redis
from tests.store.helpers import assert_same_block, make_block
from tests.store.procs import durable_writer

N = 30


def _cfg(url: str, tmp_path, *, host: int = 1 << 22, spill: bool = True) -> TieredStoreConfig:
    return TieredStoreConfig(
        fingerprint="fp",
        tiers=[HostTierConfig(budget_bytes=host, shm_prefix=SHM_PREFIX),
               RedisTierConfig(url=url, budget_bytes=1 << 24, socket_timeout_s=1.0)],
        durable=True,
        spill=SpillConfig(path=tmp_path / "spill", budget_bytes=1 << 22) if spill else None,
        audit_interval_s=0.2,
        write_behind=WriteBehindConfig(put_timeout_s=10.0, retry_backoff_s=0.1),
    )


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def _in_redis(url: str, n: int, stream: str = "live") -> int:
    c = redis.Redis.from_url(url)
    try:
        return sum(c.exists(BlockKey("fp", stream, i).to_str("streamvqa")) for i in range(n))
    finally:
        c.close()


class _Writer:
    """A durable store in a child process (spawn) that puts blocks 0..n-1, reports each ack,
    then idles until it is SIGKILLed."""

    def __init__(self, cfg: TieredStoreConfig, n: int) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=durable_writer, args=(cfg.model_dump_json(), child, n))
        self.proc.start()
        self.acked: list[int] = []

    def wait_done(self) -> list[int]:
        while True:
            assert self.conn.poll(60), "writer did not acknowledge in time"
            msg = self.conn.recv()
            if msg == "done":
                return self.acked
            self.acked.append(msg)

    def kill(self) -> None:
        if self.proc.is_alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.join(30)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["flushall", "restart-empty"])
def test_redis_losing_its_data_then_store_sigkill_loses_nothing(fault, tmp_path, shm_guard):
    proc, url = start_redis(tmp_path)  # no persistence: a restart comes back empty
    writer = None
    try:
        writer = _Writer(_cfg(url, tmp_path), N)
        acked = writer.wait_done()
        assert acked == list(range(N)) and _in_redis(url, N) == N
        if fault == "flushall":
            redis.Redis.from_url(url).flushall()
        else:
            proc.kill()
            proc.wait()
            proc, _ = start_redis(tmp_path, port=_port(url))
        assert _in_redis(url, N) == 0
        # the store notices and writes every block it still holds (host tier) again
        assert wait_until(lambda: _in_redis(url, N) == N, 60, 0.1), f"only {_in_redis(url, N)}/{N} re-written"
        writer.kill()
        assert writer.proc.exitcode == -signal.SIGKILL
        with TieredStore(_cfg(url, tmp_path)) as store:
            assert store.index("live").indices == acked
            for got in store.get_many("live", acked):
                assert_same_block(make_block(got.index, "live"), got)
    finally:
        if writer is not None:
            writer.kill()
        proc.kill()
        proc.wait()


def test_block_with_no_copy_left_leaves_the_index(redis_url, tmp_path, shm_guard):
    """Blocks demoted to Redis only, then Redis flushed: the audit forgets them (counted as
    lost); blocks still in host RAM are written to Redis again; reads never claim the lost ones."""
    block_size = len(make_block(0).keys.numpy().tobytes()) * 2
    cfg = _cfg(redis_url, tmp_path, host=block_size * 12).model_copy(update={"audit_interval_s": 3600.0})
    with TieredStore(cfg) as store:
        for i in range(N):
            store.put(make_block(i))
        warm = [i for i in range(N) if store.tier_of("cam-1", i) == "host"]
        cold = [i for i in range(N) if store.tier_of("cam-1", i) == "redis"]
        assert warm and cold and len(warm) + len(cold) == N
        redis.Redis.from_url(redis_url).flushall()
        assert store.audit() == N
        s = store.stats()
        assert s["lost"] == len(cold) and s["rewritten"] == len(warm)
        assert store.index("cam-1").indices == warm
        assert _in_redis(redis_url, N, "cam-1") == len(warm)
        found, failed = store.get_available("cam-1", list(range(N)))
        assert sorted(found) == warm and sorted(failed) == cold
        assert all(isinstance(e, BlockNotFoundError) for e in failed.values())


def test_read_miss_forgets_the_block_and_triggers_the_audit(redis_url, tmp_path, shm_guard):
    """An eviction of single keys (no run id change, marker intact) is found by the read that
    misses: that block leaves the index, and the forced audit re-writes warm blocks' copies."""
    block_size = len(make_block(0).keys.numpy().tobytes()) * 2
    cfg = _cfg(redis_url, tmp_path, host=block_size * 12)
    c = redis.Redis.from_url(redis_url)
    with TieredStore(cfg) as store:
        for i in range(N):
            store.put(make_block(i))
        cold = next(i for i in range(N) if store.tier_of("cam-1", i) == "redis")
        warm = next(i for i in range(N) if store.tier_of("cam-1", i) == "host")
        c.delete(BlockKey("fp", "cam-1", cold).to_str("streamvqa"), BlockKey("fp", "cam-1", warm).to_str("streamvqa"))
        with pytest.raises(BlockNotFoundError):
            store.get_many("cam-1", [cold])
        assert cold not in store.index("cam-1").indices and store.stats()["lost"] == 1
        assert wait_until(lambda: c.exists(BlockKey("fp", "cam-1", warm).to_str("streamvqa")) == 1, 60, 0.1)
        assert store.get_many("cam-1", [warm])[0].index == warm
    c.close()


@pytest.mark.slow
def test_redis_outage_spills_then_drains_and_survives_sigkill(tmp_path, shm_guard):
    """Redis down: every put is acknowledged at once (spill area), a SIGKILL of the store loses
    none of them, the next store serves them while Redis is still down and drains them into
    Redis once it is back (the spill area empties)."""
    persist = ("--appendonly", "yes", "--appendfsync", "always", "--save", "")
    (tmp_path / "r").mkdir()
    proc, url = start_redis(tmp_path / "r", *persist)
    cfg = _cfg(url, tmp_path)
    writer = None
    try:
        proc.kill()
        proc.wait()
        writer = _Writer(cfg, N)
        acked = writer.wait_done()  # put_timeout_s=10: a stalled put would fail the writer instead
        assert acked == list(range(N))
        assert len(list((tmp_path / "spill").rglob("*.blk"))) == N
        writer.kill()
        with TieredStore(cfg) as store:
            assert store.index("live").indices == acked and store.stats()["spilled_items"] == N
            for got in store.get_many("live", acked):
                assert_same_block(make_block(got.index, "live"), got)
            proc, _ = start_redis(tmp_path / "r", *persist, port=_port(url))
            assert store.flush(timeout=60)
            assert _in_redis(url, N) == N
            assert store.stats()["spilled_items"] == 0 and not list((tmp_path / "spill").rglob("*.blk"))
    finally:
        if writer is not None:
            writer.kill()
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_outage_longer_than_the_spill_bound_waits_then_fails_cleanly(tmp_path, shm_guard):
    """Beyond the spill budget a put waits (backpressure) and, with a put timeout, raises
    `StoreFullError` without acknowledging or leaving a trace; the spilled blocks stay."""
    from streamvqa.store.errors import StoreFullError

    proc, url = start_redis(tmp_path)
    proc.kill()
    proc.wait()
    size = len(make_block(0).keys.numpy().tobytes()) * 2
    cfg = _cfg(url, tmp_path).model_copy(update={
        "spill": SpillConfig(path=tmp_path / "spill", budget_bytes=size * 4),
        "write_behind": WriteBehindConfig(put_timeout_s=0.5, retry_backoff_s=0.1),
    })
    store = TieredStore(cfg)
    try:
        done = []
        with pytest.raises(StoreFullError):
            for i in range(N):
                store.put(make_block(i))
                done.append(i)
        assert 0 < len(done) < N
        assert store.index("cam-1").indices == done
        assert store.stats()["spilled_items"] == len(done)
        assert [b.index for b in store.get_many("cam-1", done)] == done  # still usable
    finally:
        store.close(timeout=1)  # Redis never comes back: the spill stays for the next start
    assert len(list((tmp_path / "spill").rglob("*.blk"))) == len(done)


@pytest.mark.slow
def test_redis_down_when_the_store_opens_is_recovered_once_back(tmp_path, shm_guard):
    """A store (re)started during an outage indexes Redis's blocks as soon as Redis is back."""
    persist = ("--appendonly", "yes", "--appendfsync", "always", "--save", "")
    proc, url = start_redis(tmp_path, *persist)
    try:
        with TieredStore(_cfg(url, tmp_path)) as store:
            for i in range(N):
                store.put(make_block(i))
        proc.terminate()
        proc.wait()
        store = TieredStore(_cfg(url, tmp_path))
        try:
            assert store.index("cam-1").indices == []
            proc, _ = start_redis(tmp_path, *persist, port=_port(url))
            assert wait_until(lambda: store.index("cam-1").indices == list(range(N)), 60, 0.1)
            for got in store.get_many("cam-1", list(range(N))):
                assert_same_block(make_block(got.index), got)
        finally:
            store.close(timeout=5)
    finally:
        proc.kill()
        proc.wait()
