"""Multi-process fixtures: real worker processes (tiny random SmolVLM), a real redis-server on
127.0.0.1, and a /dev/shm check around every cluster (nothing of its prefix may be left).

Every process started here is stopped by PID in teardown (the supervisor kills its children;
children also exit on their own when the supervisor's process is gone).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from streamvqa.store import shm
from streamvqa.workers.multi.config import MultiConfig
from streamvqa.workers.multi.facade import MultiEngine
from tests.helpers import wait_until  # noqa: F401 - shared polling helper, used by this package
from tests.store.conftest import start_redis  # noqa: F401 - same redis-server helper

TINY = "tiny:smolvlm"


def frames(n: int, seed: int = 0, size: tuple[int, int] = (48, 64)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (*size, 3), dtype=np.uint8) for _ in range(n)]


def prefix(tag: str) -> str:
    return f"svqmp{os.getpid() % 100000}{tag}"


def digest(block: Any) -> str:
    h = hashlib.sha256()
    for t in (block.keys, block.values, block.positions, block.rep_keys):
        h.update(t.contiguous().view(-1).view(dtype=__import__("torch").uint8).numpy().tobytes())
    h.update(repr((block.t_start, block.t_end, block.pos_start, block.pos_end)).encode())
    return h.hexdigest()


def make_config(store: dict, **kw: Any) -> MultiConfig:
    return MultiConfig(model=TINY, threads=1, run_dir=tempfile.mkdtemp(prefix="svq-"), store=store,
                       restart_backoff_s=0.2, start_timeout_s=240, **kw)


def start_cluster(store: dict) -> MultiEngine:
    pre = store["tiers"][0]["shm_prefix"]
    assert not shm.list_segments(pre), "segments of this prefix exist before the test"
    return MultiEngine(make_config(store))


def stop_cluster(engine: MultiEngine) -> None:
    pre = engine.config.shm_prefix
    pids = [w.pid for w in engine.supervisor.workers.values() if w.pid]
    engine.close()
    for pid in pids:  # by PID, in case a worker ignored SIGTERM
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    leaked = shm.list_segments(pre)
    for name, _ in leaked:
        shm.unlink_segment(name)
    assert not leaked, f"shared-memory segments left in /dev/shm: {leaked}"


@pytest.fixture(scope="module")
def durable_cluster(tmp_path_factory) -> Iterator[MultiEngine]:
    """host (shm) -> disk, durable: an acknowledged block survives any worker's kill -9."""
    disk = tmp_path_factory.mktemp("kvdisk")
    store = {"tiers": [{"kind": "host", "budget_bytes": 64 << 20, "shm_prefix": prefix("d")},
                       {"kind": "disk", "path": str(disk), "budget_bytes": 64 << 20}],
             "durable": True}
    engine = start_cluster(store)
    try:
        yield engine
    finally:
        stop_cluster(engine)
