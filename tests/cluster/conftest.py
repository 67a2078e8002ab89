"""Cluster fixtures: real replica processes (`streamvqa serve`, the grounded default model) on
127.0.0.1 sharing one real redis-server, a needle video the default model can answer about.

Every process started here is stopped by PID in teardown; each replica has its own shared-memory
prefix (on one machine the replicas' host tiers must not meet)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamvqa.server.auth import hash_key, new_key
from streamvqa.store import shm
from tests.store.conftest import _free_port, start_redis

ROOT = Path(__file__).resolve().parents[2]
KEY_A, KEY_B, KEY_ADMIN = new_key(), new_key(), new_key()
LEASE_S = 5.0


def wait_until(pred: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = pred()
        except (httpx.HTTPError, OSError):
            value = None
        if value:
            return value
        time.sleep(interval)
    return None


class Replica:
    def __init__(self, name: str, redis_url: str, media: Path, tmp: Path) -> None:
        self.name = name
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.prefix = f"svqc{os.getpid() % 10000}{name}"
        self.redis_url = redis_url
        self.media = media
        self.log = tmp / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        keys = json.dumps([{"name": n, "hash": hash_key(k), "max_streams": 8}
                           for n, k in (("a", KEY_A), ("b", KEY_B), ("admin", KEY_ADMIN))])
        env = {**os.environ, "PYTHONPATH": str(ROOT),
               "STREAMVQA_API_KEYS": keys, "STREAMVQA_MEDIA_ROOT": str(self.media),
               "STREAMVQA_ALLOWED_NETWORKS": "127.0.0.0/8", "STREAMVQA_THREADS": "1",
               "STREAMVQA_CLUSTER_REDIS_URL": self.redis_url, "STREAMVQA_REPLICA_ID": self.name,
               "STREAMVQA_ADVERTISE_URL": self.url, "STREAMVQA_CLUSTER_LEASE_S": str(LEASE_S),
               "STREAMVQA_CLUSTER_ADMIN_KEYS": "admin", "STREAMVQA_STORE_REDIS_URL": self.redis_url,
               "STREAMVQA_STORE_DURABLE": "true", "STREAMVQA_STORE_SHM_PREFIX": self.prefix,
               "STREAMVQA_STORE_HOST_BYTES": str(256 << 20), "STREAMVQA_DEFAULT_METHOD": "rekv",
               "STREAMVQA_KEY_QUESTIONS_PER_MINUTE": "600"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamvqa.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def ready(self) -> bool:
        return httpx.get(self.url + "/ready", timeout=2).status_code == 200

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        for name, _ in shm.list_segments(self.prefix):  # what a kill -9 leaves behind
            shm.unlink_segment(name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def redis_aof(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A redis-server with AOF (everysec); ``restart(persist)`` in place, same port."""
    d = tmp_path_factory.mktemp("redis")
    state: dict[str, Any] = {}
    proc, url = start_redis(d, "--appendonly", "yes", "--appendfsync", "everysec", "--save", "")
    state.update(proc=proc, url=url, dir=d, port=int(url.rsplit(":", 1)[1].split("/")[0]))

    def restart(persist: bool) -> None:
        state["proc"].kill()
        state["proc"].wait()
        extra = ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""] if persist else []
        if not persist:
            for f in d.rglob("*"):
                if f.is_file():
                    f.unlink()
            extra = ["--appendonly", "no", "--save", ""]
        p, _ = start_redis(d, *extra, port=state["port"])
        state["proc"] = p

    state["restart"] = restart
    yield state
    state["proc"].kill()
    state["proc"].wait()


@pytest.fixture(scope="module")
def needle(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 40 s needle video in the media root: a red star at the left from t=3 to t=8, nothing
    else; the question and its answer."""
    from streamvqa.synth.streams import Event, Stream, write_stream

    media = tmp_path_factory.mktemp("media")
    stream = Stream(seed=11, duration=40.0, fps=2.0, width=256, height=256, background=(120, 120, 120),
                    events=[Event(3.0, 5.0, shape="star", colour="red", position="left", size=0.14)])
    write_stream(stream, media / "needle.mp4")
    stream.duration = 14.0
    write_stream(stream, media / "short.mp4")
    return {"media": media, "file": "needle.mp4", "short": "short.mp4",
            "question": "What colour was the star that appeared?",
            "answer": "red", "evidence": (3.0, 8.0)}


@pytest.fixture(scope="module")
def cluster(redis_aof: dict[str, Any], needle: dict[str, Any],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Replica]]:
    """Three replicas (r1, r2, r3) sharing the one Redis, ready."""
    logs = tmp_path_factory.mktemp("logs")
    replicas = [Replica(f"r{i}", redis_aof["url"], needle["media"], logs) for i in (1, 2, 3)]
    try:
        for r in replicas:
            r.start()
        for r in replicas:
            assert wait_until(r.ready, 240), r.tail()
        yield replicas
    finally:
        for r in replicas:
            r.stop()


@pytest.fixture(scope="module")
def rtsp_url() -> Iterator[str]:
    """The GStreamer RTSP test server (videotestsrc, small frames to spare the CPU)."""
    from tests.ingest.conftest import RtspServer

    server = RtspServer(_free_port(), ["--width", "160", "--height", "120", "--fps", "10"])
    try:
        yield server.start()
    finally:
        server.kill()
