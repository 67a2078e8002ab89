"""Cluster fixtures: real replica processes (`streamvqa serve`, the grounded default model) on
127.0.0.1 sharing one real redis-server (`streamvqa.cluster.local`), a needle video the default
model can answer about, the GStreamer RTSP test server. Every process is stopped by its PID."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from streamvqa.cluster.local import LocalRedis, LocalReplica, free_port, wait_until, write_needle
from streamvqa.server.auth import hash_key, new_key

__all__ = ["KEY_A", "KEY_ADMIN", "KEY_B", "KEY_C", "LEASE_S", "LocalReplica", "auth", "wait_until"]

KEY_A, KEY_B, KEY_C, KEY_ADMIN = new_key(), new_key(), new_key(), new_key()
LEASE_S = 5.0  # the default


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def redis_aof(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedis]:
    """A redis-server with AOF (everysec); ``restart(persist)`` in place, same port."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server binary not found (apt-get install -y redis-server)")
    server = LocalRedis(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def needle(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The media root: a 40 s needle video and a 14 s one (a red star at the left, t 3..8 s)."""
    media = tmp_path_factory.mktemp("media")
    info = write_needle(media, 40.0)
    write_needle(media, 14.0, "short.mp4")
    return {**info, "media": media, "short": "short.mp4"}


@pytest.fixture(scope="module")
def cluster(redis_aof: LocalRedis, needle: dict[str, Any],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[LocalReplica]]:
    """Three replicas (r1, r2, r3) sharing the one Redis, ready; keys a, b, admin, and c (one live
    stream, two questions a minute)."""
    logs = tmp_path_factory.mktemp("logs")
    keys = json.dumps([{"name": n, "hash": hash_key(k), "max_streams": 8}
                       for n, k in (("a", KEY_A), ("b", KEY_B), ("admin", KEY_ADMIN))]
                      + [{"name": "c", "hash": hash_key(KEY_C), "max_streams": 1, "questions_per_minute": 2}])
    env = {"STREAMVQA_API_KEYS": keys, "STREAMVQA_MEDIA_ROOT": str(needle["media"]),
           "STREAMVQA_ALLOWED_NETWORKS": "127.0.0.0/8", "STREAMVQA_CLUSTER_ADMIN_KEYS": "admin",
           "STREAMVQA_DEFAULT_METHOD": "rekv", "STREAMVQA_KEY_QUESTIONS_PER_MINUTE": "600"}
    replicas = [LocalReplica(f"r{i}", redis_aof.url, logs, env, LEASE_S) for i in (1, 2, 3)]
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

    server = RtspServer(free_port(), ["--width", "160", "--height", "120", "--fps", "10"])
    try:
        yield server.start()
    finally:
        server.kill()
