"""A cluster on one machine: a redis-server and replica processes (`streamvqa serve`) on
127.0.0.1, for the tests and the failover benchmark. Every process is stopped by its PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    """``pred()`` once truthy (HTTP/OS errors count as not yet), else None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = pred()
        except (httpx.HTTPError, redis.RedisError, OSError, ValueError, KeyError):
            value = None
        if value:
            return value
        time.sleep(interval)
    return None


class LocalRedis:
    """redis-server in ``directory``; ``restart(persist)`` on the same port (AOF or none)."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.dir = Path(directory)
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, persist: bool = True) -> LocalRedis:
        exe = shutil.which("redis-server")
        if exe is None:
            raise FileNotFoundError("redis-server not found (apt-get install -y redis-server)")
        args = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
                "--appendonly", "yes" if persist else "no", "--appendfsync", "everysec"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        try:
            if not wait_until(client.ping, 10, 0.05):
                raise RuntimeError("redis-server did not answer PING")
        finally:
            client.close()
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self, persist: bool) -> None:
        """Killed (no shutdown save) and started again; without ``persist`` its files are removed
        first, so it comes back empty."""
        self.kill()
        if not persist:
            for f in self.dir.rglob("*"):
                if f.is_file():
                    f.unlink()
        self.start(persist)


class LocalReplica:
    """One replica process; ``env`` adds settings (``STREAMVQA_*``) to the cluster's own."""

    def __init__(self, name: str, redis_url: str, log_dir: Path, env: dict[str, str] | None = None,
                 lease_s: float = 5.0) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.prefix = f"svqc{os.getpid() % 10000}{name}"  # host tiers of replicas on one machine must not meet
        self.log = Path(log_dir) / f"{name}.log"
        self.env = {
            "PYTHONPATH": str(ROOT), "STREAMVQA_THREADS": "1",
            "STREAMVQA_CLUSTER_REDIS_URL": redis_url, "STREAMVQA_REPLICA_ID": name,
            "STREAMVQA_ADVERTISE_URL": self.url, "STREAMVQA_CLUSTER_LEASE_S": str(lease_s),
            "STREAMVQA_STORE_REDIS_URL": redis_url, "STREAMVQA_STORE_DURABLE": "true",
            "STREAMVQA_STORE_SHM_PREFIX": self.prefix, "STREAMVQA_STORE_HOST_BYTES": str(256 << 20),
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LocalReplica:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamvqa.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=ROOT, env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT)
        return self

    def ready(self) -> bool:
        return httpx.get(self.url + "/ready", timeout=2).status_code == 200

    def kill(self) -> None:
        """``kill -9``, then the shared memory a killed process leaves behind."""
        from streamvqa.store import shm

        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        for name, _ in shm.list_segments(self.prefix):
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


def write_needle(media: Path, seconds: float = 40.0, name: str = "needle.mp4") -> dict[str, Any]:
    """A video the default model can answer about: a red star at the left from t=3 to t=8 s,
    nothing else; the question, its answer and the event's times."""
    from streamvqa.synth.streams import Event, Stream, write_stream

    stream = Stream(seed=11, duration=seconds, fps=2.0, width=256, height=256, background=(120, 120, 120),
                    events=[Event(3.0, 5.0, shape="star", colour="red", position="left", size=0.14)])
    write_stream(stream, Path(media) / name)
    return {"file": name, "question": "What colour was the star that appeared?", "answer": "red",
            "evidence": (3.0, 8.0)}
