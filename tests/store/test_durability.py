"""Invariant 5: an acknowledged block survives a SIGKILL of the store process."""

import multiprocessing as mp
import os
import signal

import pytest

from streamvqa.store import shm
from streamvqa.store.config import DiskTierConfig, HostTierConfig, RedisTierConfig, TieredStoreConfig
from streamvqa.store.tiered import TieredStore
from tests.store.conftest import SHM_PREFIX
from tests.store.helpers import assert_same_block, make_block
from tests.store.procs import durable_writer


def _kill_mid_stream(cfg: TieredStoreConfig, n_blocks: int = 40, kill_after: int = 12) -> list[int]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=durable_writer, args=(cfg.model_dump_json(), child, n_blocks))
    proc.start()
    acked = []
    try:
        while len(acked) < kill_after:
            assert parent.poll(60), "writer did not acknowledge in time"
            acked.append(parent.recv())
        os.kill(proc.pid, signal.SIGKILL)  # while it is still writing
        proc.join(30)
        while parent.poll(0):
            msg = parent.recv()
            if msg != "done":
                acked.append(msg)
    finally:
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(30)
    assert proc.exitcode == -signal.SIGKILL
    return acked


@pytest.mark.slow
@pytest.mark.parametrize("cold", ["disk", "redis"])
def test_acknowledged_blocks_survive_sigkill(cold, tmp_path, request, shm_guard):
    cold_cfg = (
        DiskTierConfig(path=tmp_path / "kv", budget_bytes=1 << 22)
        if cold == "disk"
        else RedisTierConfig(url=request.getfixturevalue("redis_url"), budget_bytes=1 << 22)
    )
    cfg = TieredStoreConfig(
        fingerprint="fp",
        tiers=[HostTierConfig(budget_bytes=1 << 20, shm_prefix=SHM_PREFIX), cold_cfg],
        durable=True,
    )
    acked = _kill_mid_stream(cfg)
    assert len(acked) >= 12 and acked == list(range(len(acked)))
    # the dead writer's shared memory is still there …
    assert any(pid != os.getpid() for _, pid in shm.list_segments(SHM_PREFIX))
    with TieredStore(cfg) as store:  # … until the next store's janitor runs
        assert not [n for n, pid in shm.list_segments(SHM_PREFIX) if pid != os.getpid()]
        idx = store.index("live")
        assert set(acked) <= set(idx.indices)
        for got in store.get_many("live", acked):
            assert_same_block(make_block(got.index, "live"), got)
        assert store.stats()["recovered"] >= len(acked)
        # the stream resumes after its last acknowledged block
        store.put(make_block(idx.indices[-1] + 1, "live"))
        assert store.index("live").indices[-1] == idx.indices[-1] + 1


def test_clean_close_persists_warm_blocks(tmp_path, shm_guard):
    cfg = TieredStoreConfig(
        fingerprint="fp",
        tiers=[
            HostTierConfig(budget_bytes=1 << 20, shm_prefix=SHM_PREFIX),
            DiskTierConfig(path=tmp_path / "kv", budget_bytes=1 << 22),
        ],
    )
    with TieredStore(cfg) as store:
        for i in range(5):
            store.put(make_block(i))
        assert store.blocks_by_tier()["disk"] == 0  # nothing written through (not durable)
    with TieredStore(cfg) as store:
        assert store.index("cam-1").indices == list(range(5))
        assert store.blocks_by_tier() == {"host": 0, "disk": 5, "pending": 0}
        for got in store.get_many("cam-1", list(range(5))):
            assert_same_block(make_block(got.index), got)
