"""The run directory (issue 17, item 7): 0700 even when it existed with a wider mode, config.json
0600 and written atomically, sockets of dead workers removed at start and at shutdown (real
ZeroMQ ipc sockets left by a process killed with SIGKILL)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys

import pytest
import zmq

from streamvqa.workers.multi.config import MultiConfig
from streamvqa.workers.multi.supervisor import Supervisor

HOST = {"kind": "host", "budget_bytes": 1 << 20, "shm_prefix": "svqrundir"}


def _config(run_dir, *tiers: dict) -> MultiConfig:
    return MultiConfig(model="tiny:smolvlm", run_dir=str(run_dir), store={"tiers": [HOST, *tiers]})


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_existing_run_dir_is_tightened_and_config_is_private(tmp_path):
    run = tmp_path / "run"
    run.mkdir(mode=0o755)
    os.chmod(run, 0o755)
    (run / "config.json").write_text("{}")
    os.chmod(run / "config.json", 0o644)
    cfg = _config(run, {"kind": "redis", "url": "redis://:secret@127.0.0.1:6379/0", "budget_bytes": 1 << 20})
    path = cfg.write()
    assert _mode(run) == 0o700
    assert _mode(path) == 0o600
    assert MultiConfig.read(path) == cfg
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]  # no temp file left


def _bind_and_die(run_dir, roles: list[str]) -> None:
    """A process binds real ZeroMQ ipc sockets and is killed with SIGKILL: the files stay."""
    code = (
        "import sys, time, zmq\n"
        "ctx = zmq.Context()\n"
        "socks = []\n"
        "for r in sys.argv[2:]:\n"
        "    s = ctx.socket(zmq.ROUTER); s.bind(f'ipc://{sys.argv[1]}/{r}.sock'); socks.append(s)\n"
        "print('bound', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir), *roles], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"bound"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()


@pytest.mark.slow
def test_stale_sockets_are_swept_live_ones_kept(tmp_path):
    cfg = _config(tmp_path)
    _bind_and_die(tmp_path, ["kvstore", "encoder"])
    stale = [tmp_path / "kvstore.sock", tmp_path / "encoder.sock"]
    assert all(stat.S_ISSOCK(os.lstat(p).st_mode) for p in stale)
    ctx = zmq.Context()
    live = ctx.socket(zmq.ROUTER)
    live.bind(f"ipc://{tmp_path}/answer.sock")
    try:
        removed, alive = cfg.sweep_sockets()
        assert sorted(removed) == sorted(str(p) for p in stale)
        assert alive == ["answer"] and (tmp_path / "answer.sock").exists()
        assert not any(p.exists() for p in stale)
        # a supervisor refuses a run directory where a worker still listens
        with pytest.raises(RuntimeError, match="in use"):
            Supervisor(cfg).start(timeout=5)
    finally:
        live.close(0)
        ctx.term()


@pytest.mark.slow
def test_supervisor_stop_removes_sockets_its_killed_workers_left(tmp_path):
    _bind_and_die(tmp_path, ["kvstore", "encoder", "answer"])
    Supervisor(_config(tmp_path)).stop()
    assert not list(tmp_path.glob("*.sock"))
