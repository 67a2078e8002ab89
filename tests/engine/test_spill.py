"""Item: the embedded server's memory is bounded by default. With no store configured it gets a
host tier of `default_host_bytes()` that spills to a per-process scratch directory; a preset that
never reads stored blocks back (sliding-window) stores none in an engine-owned store."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from streamvqa.engine import Engine, EngineConfig, spill
from streamvqa.server.settings import ServerSettings
from streamvqa.store.base import MemoryStore
from tests.engine.conftest import get_adapter, make_frames

TINY = "tiny:smolvlm"


def test_embedded_default_is_a_bounded_host_tier_with_a_disk_spill(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("STREAMVQA_CACHE", str(tmp_path))
    cfg = ServerSettings().store_config()
    host, disk = cfg["tiers"]
    assert host["kind"] == "host" and spill.MIN_HOST <= host["budget_bytes"] <= spill.HOST_CAP
    assert disk["kind"] == "disk" and disk["path"] == str(tmp_path / "kv-spill" / str(os.getpid()))
    assert cfg["recover"] is False and cfg["persist_on_close"] is False  # scratch, not durability
    # configured tiers are left as they were
    assert ServerSettings(store_host_bytes=1 << 30).store_config()["tiers"] == [
        {"kind": "host", "budget_bytes": 1 << 30, "shm_prefix": "streamvqa"}]


@pytest.mark.slow
def test_default_store_spills_over_budget_and_cleans_up(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("STREAMVQA_CACHE", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    leftover = tmp_path / "kv-spill" / dead
    (leftover / "x").mkdir(parents=True)
    budget = 128 << 10  # a few tiny-model blocks
    monkeypatch.setattr(spill, "default_host_bytes", lambda: budget)
    engine = Engine(EngineConfig(model=TINY, threads=1, store=ServerSettings().store_config()),
                    adapter=get_adapter(TINY))
    try:
        assert not leftover.exists()  # a dead server's scratch directory was removed
        session = engine.open_stream("s", method="rekv")
        for image, t in make_frames(40):
            session.push_frame(image, t)
        engine.store.flush()  # the write-behind queue has reached the disk
        kv = session.stats().kv_bytes
        assert 0 < kv["host"] <= budget and kv["disk"] > 0
        assert session.answer("What is shown?", max_tokens=3).finish_reason in ("stop", "length")
        mine = spill.spill_dir()
        assert mine.is_dir()
    finally:
        engine.close()
    assert not mine.exists()


def test_sliding_window_stores_nothing_it_cannot_read_back() -> None:
    adapter = get_adapter(TINY)
    own = Engine(EngineConfig(model=TINY, threads=1), adapter=adapter)  # engine-owned store
    shared = Engine(EngineConfig(model=TINY, threads=1), adapter=adapter, store=MemoryStore())  # multi: shared
    options = {"n_local": 64}
    a = own.open_stream("s", method="sliding-window", options=options)
    b = shared.open_stream("s", method="sliding-window", options=options)
    for image, t in make_frames(12):
        a.push_frame(image, t)
        b.push_frame(image, t)
    assert len(a.window.blocks) < 12  # blocks have left the window
    assert own.store.blocks_by_tier("s") == {"host": 0}
    assert shared.store.blocks_by_tier("s") == {"host": 12}  # another process may rebuild the window
    x, y = a.answer("What is shown?", max_tokens=5), b.answer("What is shown?", max_tokens=5)
    assert x.token_ids == y.token_ids and x.evidence == y.evidence
    assert x.tiers == {"window": len(a.window.blocks)}
    # rekv reads stored blocks back: they are kept
    r = own.open_stream("r", method="rekv", options=options)
    for image, t in make_frames(12):
        r.push_frame(image, t)
    assert own.store.blocks_by_tier("r") == {"host": 12}
