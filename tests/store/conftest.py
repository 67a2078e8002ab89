"""Fixtures for store tests: a real redis-server on 127.0.0.1 (random port, temp dir)."""

from __future__ import annotations

import shutil
import socket
import subprocess

import pytest
import redis

from streamvqa.store import shm
from tests.helpers import wait_until

SHM_PREFIX = "svqtest"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(directory, *extra: str, port: int | None = None) -> tuple[subprocess.Popen, str]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server binary not found (apt-get install -y redis-server)")
    port = port or _free_port()
    args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--daemonize", "no"]
    args += list(extra) or ["--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {proc.returncode}") from None
            return False

    if not wait_until(answers, 10):
        proc.kill()
        raise RuntimeError("redis-server did not answer PING")
    client.close()
    return proc, url


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    proc.kill()
    proc.wait()


@pytest.fixture
def redis_url(redis_server):
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    return redis_server


@pytest.fixture
def shm_guard():
    """Asserts that a test leaves no segment of the test prefix behind in /dev/shm."""
    before = set(shm.list_segments(SHM_PREFIX))
    yield SHM_PREFIX
    leaked = set(shm.list_segments(SHM_PREFIX)) - before
    for name, _pid in leaked:
        shm.unlink_segment(name)
    assert not leaked, f"leaked shared-memory segments: {sorted(leaked)}"
