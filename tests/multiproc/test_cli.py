"""`streamvqa serve --topology=multi` (one command: server + workers) over HTTP, and workers
started one by one with `streamvqa worker ...` (containers) that a server attaches to."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from streamvqa.store import shm
from streamvqa.store.shm import pid_alive
from streamvqa.workers.multi.config import ROLES
from streamvqa.workers.multi.facade import MultiEngine
from tests.ingest.media import write_index_mp4
from tests.multiproc.conftest import frames, make_config, prefix, wait_until

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "streamvqa.server.cli"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_index_mp4(tmp_path_factory.mktemp("mp_media") / "clip.mp4", seconds=3.0, fps=10, width=160,
                           height=120)


def test_serve_topology_multi_over_http(clip: Path, serve_process) -> None:
    pre = prefix("c")
    env = {"STREAMVQA_AUTH": "off", "STREAMVQA_MEDIA_ROOT": str(clip.parent),
           "STREAMVQA_REALTIME_FILES": "false", "STREAMVQA_THREADS": "1", "STREAMVQA_STORE_SHM_PREFIX": pre,
           "STREAMVQA_RUN_DIR": tempfile.mkdtemp(prefix="svq-")}
    server = serve_process(["--model", "tiny:smolvlm", "--topology", "multi"], env)
    pids: list[int] = []
    try:
        base = server.base
        assert server.wait_ready(240, 0.3)
        body = httpx.get(f"{base}/ready").json()
        workers = body["checks"]["store"]["workers"]
        pids = [w["pid"] for w in workers.values()]
        assert set(workers) == set(ROLES) and all(w["state"] == "up" for w in workers.values())
        assert body["checks"]["model"]["topology"] == "multi"
        r = httpx.post(f"{base}/v1/streams", json={"url": clip.as_uri(), "fps": 2})
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        info = wait_until(lambda: (i := httpx.get(f"{base}/v1/streams/{sid}").json())["state"] == "ended" and i, 60)
        assert info and info["frames_encoded"] >= 4 and info["memory_blocks"].get("host", 0) >= 4, info
        a = httpx.post(f"{base}/v1/streams/{sid}/questions", json={"question": "What appeared?", "max_tokens": 6},
                       timeout=60)
        assert a.status_code == 200, a.text
        assert a.json()["tokens"] >= 1 and a.json()["evidence"]
        metrics = httpx.get(f"{base}/metrics").text
        assert "vqa_questions_total" in metrics
        assert 'vqa_worker_up{role="encoder"} 1.0' in metrics and 'vqa_kv_tier_up{tier="host"} 1.0' in metrics
    finally:
        out = server.stop(60)
    assert "Application shutdown complete" in out, out[-3000:]
    assert wait_until(lambda: not any(pid_alive(p) for p in pids), 30), "workers outlived the server"
    assert not shm.list_segments(pre)


@pytest.mark.slow
def test_workers_started_individually() -> None:
    """Containers: each role is its own `streamvqa worker` process; the server only attaches."""
    config = make_config({"tiers": [{"kind": "host", "budget_bytes": 32 << 20, "shm_prefix": prefix("w")}]})
    path = config.write()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([*CLI, "worker", role, "--config", str(path)], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for role in ROLES]
    engine = None
    try:
        engine = MultiEngine(config.model_copy(update={"spawn": False}))
        s = engine.open_stream("w1", "rekv", {})
        for i, f in enumerate(frames(3, seed=6)):
            s.push_frame(f, float(i))
        assert s.answer("what is shown?", max_tokens=4).token_ids
        assert {w["pid"] for w in engine.supervisor.status().values()} == {p.pid for p in procs}
    finally:
        if engine is not None:
            engine.close()  # attach mode: leaves the workers alone
        assert all(p.poll() is None for p in procs)
        for p in procs:
            os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(10)
    assert wait_until(lambda: not shm.list_segments(config.shm_prefix), 10)


@pytest.mark.slow
@pytest.mark.parametrize("args, words", [
    (["worker", "bogus"], "role must be"),
    (["worker", "kvstore"], "STREAMVQA_RUN_DIR"),
    (["worker", "encoder-3", "--config", "/nonexistent/config.json"], "bad config"),
])
def test_worker_rejects_bad_input(args: list[str], words: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMVQA_")}
    r = subprocess.run([*CLI, *args], cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
