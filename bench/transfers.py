"""Transfers: KV block bytes per second through shared memory, memcpy, disk and Redis.

Calls `streamvqa.store.bench.run` against a temporary redis-server on a free 127.0.0.1 port
(when the binary exists), stopped by its PID afterwards.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import socket
import subprocess
import tempfile
import time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(directory: str) -> tuple[subprocess.Popen | None, str | None]:
    """A private redis-server (no persistence); (None, None) when the binary is missing or fails."""
    exe = shutil.which("redis-server")
    if exe is None:
        return None, None
    import redis

    port = _free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", directory, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        for _ in range(100):
            try:
                if client.ping():
                    return proc, url
            except redis.ConnectionError:
                if proc.poll() is not None:
                    return None, None
                time.sleep(0.05)
    finally:
        client.close()
    proc.kill()
    proc.wait()
    return None, None


def run(quick: bool) -> dict:
    from streamvqa.store import bench as store_bench

    with tempfile.TemporaryDirectory(prefix="svqbench-redis-") as d:
        proc, url = start_redis(d)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # we print our own table
                out = store_bench.run(quick=quick, redis_url=url)
        finally:
            if proc is not None:
                proc.kill()
                proc.wait()
    out["redis_server"] = url is not None
    memcpy = out.get("results", {}).get("memcpy", {}).get("copy_Bps")
    rows = []
    for tier, figures in out.get("results", {}).items():
        for op, bps in figures.items():
            if op.endswith("_Bps") and isinstance(bps, (int, float)):  # not counts such as `spilled`
                rows.append({"tier": tier, "op": op.removesuffix("_Bps"), "MB_per_s": bps / 1e6,
                             "ratio_vs_memcpy": bps / memcpy if memcpy else None})
    out["rows"] = rows
    return out
