"""Helpers every test package shares: bounded polling and a `streamvqa serve` process."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "streamvqa.server.cli"]


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Call ``predicate`` until it returns something truthy or ``timeout`` seconds have passed
    (bounded); returns that value, else the last call's (falsy) value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


async def wait_until_async(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """`wait_until` inside an event loop; ``predicate`` may be a coroutine function."""
    async def call() -> Any:
        value = predicate()
        return await value if inspect.isawaitable(value) else value

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        value = await call()
        if value:
            return value
        await asyncio.sleep(interval)
    return await call()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """``streamvqa serve`` in a subprocess on 127.0.0.1 (stopped by PID with `stop`)."""

    def __init__(self, args: Sequence[str] = (), env: Mapping[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        self.proc = subprocess.Popen([*CLI, "serve", "--host", "127.0.0.1", "--port", str(self.port), *args],
                                     cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.output = ""
        self._stopped = False

    def ready(self) -> bool:
        """/ready answers 200 (False while starting; True once the process has exited, so a
        wait ends at once: check `alive` after waiting)."""
        try:
            return httpx.get(f"{self.base}/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return self.proc.poll() is not None

    def wait_ready(self, timeout: float, interval: float = 0.2) -> bool:
        return bool(wait_until(self.ready, timeout, interval)) and self.alive

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> str:
        """SIGTERM (graceful shutdown), SIGKILL after ``timeout``; returns the process's output."""
        if self._stopped:
            return self.output
        self._stopped = True
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            out, _ = self.proc.communicate(timeout=10)
        self.output = out or ""
        return self.output
