"""The supervisor (in the server process): starts the kvstore, encoder and answer workers,
watches them, restarts a dead one with backoff, and tells the server side what happened.

- A dead worker's RPC client is reset at once: calls in flight (a question being answered)
  fail with ``worker_unavailable`` instead of waiting for a timeout.
- Every restart runs the shared-memory janitor first (segments of the dead process go).
- When an encoder comes back, `on_ready` listeners re-open its streams with ``resume=True``.

Children get ``STREAMVQA_SUPERVISOR_PID`` and exit when the supervisor is gone, so a killed
server never leaves workers (and their shared memory) behind.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from streamvqa.store import shm
from streamvqa.workers.multi.config import MultiConfig
from streamvqa.workers.multi.rpc import RpcClient

log = logging.getLogger(__name__)


@dataclass
class Worker:
    role: str
    client: RpcClient
    proc: subprocess.Popen | None = None
    state: str = "stopped"  # starting | up | down | stopped | failed
    restarts: int = 0
    started_at: float = 0.0
    backoff_s: float = 0.0
    next_start: float = 0.0
    last_exit: int | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    remote_pid: int | None = None  # attach mode: the PID the worker reports

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else self.remote_pid


class Supervisor:
    def __init__(self, config: MultiConfig, *, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.env = env
        self.workers = {r: Worker(r, RpcClient(config.endpoint(r), name=r)) for r in config.roles()}
        self.on_ready: list[Callable[[str], None]] = []
        self.on_death: list[Callable[[str], None]] = []
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None
        self._config_path: Path | None = None

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        """`start` ran: the workers served and are being watched."""
        return self._monitor is not None

    def start(self, timeout: float | None = None) -> Supervisor:
        """Start every worker (kvstore first) and wait until all serve; RuntimeError if not."""
        timeout = timeout or self.config.start_timeout_s
        if not self.config.spawn:
            return self._attach(timeout)
        self._config_path = self.config.write()
        removed, live = self.config.sweep_sockets()
        if live:
            raise RuntimeError(f"run directory {self.config.run_dir} is in use: {', '.join(live)} "
                               "already listening (another server?)")
        if removed:
            log.info("removed %d stale sockets from %s", len(removed), self.config.run_dir)
        shm.janitor(self.config.shm_prefix)
        self._spawn("kvstore")
        self._wait("kvstore", timeout)
        model_roles = [r for r in self.workers if r != "kvstore"]
        for role in model_roles:  # the model workers load in parallel
            self._spawn(role)
        for role in model_roles:
            self._wait(role, timeout)
        self._monitor = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._monitor.start()
        return self

    def _attach(self, timeout: float) -> Supervisor:
        """Workers run on their own (containers): wait until each answers, then watch by ping."""
        deadline = time.monotonic() + timeout
        for w in self.workers.values():
            while (pong := w.client.ping(timeout=1.0)) is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{w.role} worker is not answering at {w.client.endpoint}")
                time.sleep(0.2)
            w.remote_pid = pong.pid
            w.state = "up"
            w.ready.set()
        self._monitor = threading.Thread(target=self._watch_external, name="supervisor", daemon=True)
        self._monitor.start()
        return self

    def _watch_external(self) -> None:
        pids: dict[str, int] = {}
        while not self._stopping.wait(1.0):
            for w in self.workers.values():
                pong = w.client.ping(timeout=1.0)
                if pong is None and w.state == "up":
                    log.warning("%s worker stopped answering", w.role)
                    w.state = "down"
                    w.ready.clear()
                    w.client.reset()
                    for fn in list(self.on_death):
                        fn(w.role)
                elif pong is not None and (w.state != "up" or pids.get(w.role, pong.pid) != pong.pid):
                    if w.state == "up":  # restarted between two pings
                        w.client.reset()
                    w.restarts += w.role in pids
                    w.state = "up"
                    w.ready.set()
                    for fn in list(self.on_ready):
                        fn(w.role)
                if pong is not None:
                    pids[w.role] = w.remote_pid = pong.pid

    def _wait(self, role: str, timeout: float) -> None:
        w = self.workers[role]
        if not w.ready.wait(timeout):
            out = self.log_tail(role)
            self.stop()
            raise RuntimeError(f"{role} worker did not start in {timeout:.0f}s; log tail:\n{out}")

    def log_path(self, role: str) -> Path:
        return Path(self.config.run_dir) / f"{role}.log"

    def log_tail(self, role: str, n: int = 4000) -> str:
        try:
            return self.log_path(role).read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def _spawn(self, role: str) -> None:
        w = self.workers[role]
        env = dict(os.environ if self.env is None else self.env)
        env["STREAMVQA_SUPERVISOR_PID"] = str(os.getpid())
        cmd = [sys.executable, "-m", "streamvqa.workers.multi", role, "--config", str(self._config_path)]
        logf = open(self.log_path(role), "ab")  # noqa: SIM115 - handed to the child
        try:
            w.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        finally:
            logf.close()
        w.state = "starting"
        w.started_at = time.monotonic()
        w.ready.clear()
        threading.Thread(target=self._await_ready, args=(w, w.proc), name=f"ready-{role}", daemon=True).start()
        log.info("started %s worker (pid %d)", role, w.proc.pid)

    def _await_ready(self, w: Worker, proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + self.config.start_timeout_s
        while time.monotonic() < deadline and not self._stopping.is_set():
            if proc.poll() is not None or w.proc is not proc:
                return
            pong = w.client.ping(timeout=0.5)
            if pong is not None and pong.pid == proc.pid:
                with self._lock:
                    if w.proc is not proc:
                        return
                    w.state = "up"
                    w.ready.set()
                for fn in list(self.on_ready):
                    try:
                        fn(w.role)
                    except Exception:
                        log.exception("on_ready(%s) failed", w.role)
                return
            time.sleep(0.1)
        if proc.poll() is None and w.proc is proc and not self._stopping.is_set():
            log.error("%s worker (pid %d) did not start in time; killing it", w.role, proc.pid)
            _kill(proc, signal.SIGKILL)

    def _watch(self) -> None:
        while not self._stopping.wait(0.1):
            for w in self.workers.values():
                with self._lock:
                    proc = w.proc
                    if proc is None:
                        continue
                    code = proc.poll()
                    if code is not None and w.state in ("up", "starting"):
                        self._died(w, code)
                    elif w.state == "down" and time.monotonic() >= w.next_start:
                        self._restart(w)

    def _died(self, w: Worker, code: int) -> None:
        log.warning("%s worker (pid %d) exited with %s; restarting", w.role, w.proc.pid, code)
        w.state = "down"
        w.last_exit = code
        w.ready.clear()
        w.client.reset()  # questions in flight on it fail now, not at a timeout
        up_for = time.monotonic() - w.started_at
        w.backoff_s = self.config.restart_backoff_s if up_for > 60 or not w.backoff_s else min(30.0, w.backoff_s * 2)
        w.next_start = time.monotonic() + w.backoff_s
        for fn in list(self.on_death):
            try:
                fn(w.role)
            except Exception:
                log.exception("on_death(%s) failed", w.role)

    def _restart(self, w: Worker) -> None:
        removed = shm.janitor(self.config.shm_prefix)
        if removed:
            log.info("janitor: removed %d segments of dead processes", len(removed))
        w.restarts += 1
        self._spawn(w.role)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop every worker (answer and encoder first, the store last, so it can flush)."""
        self._stopping.set()
        if self._monitor is not None and self._monitor is not threading.current_thread():
            self._monitor.join(2)
        order = [r for r in self.workers if r.startswith("answer")] + \
            [r for r in self.workers if r.startswith("encoder")] + ["kvstore"]
        for role in order:
            w = self.workers[role]
            if not self.config.spawn:  # not ours to stop
                w.client.close()
                continue
            proc = w.proc
            if proc is not None and proc.poll() is None:
                _kill(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    _kill(proc, signal.SIGKILL)
                    proc.wait(5)
            w.state = "stopped"
            w.client.close()
        if self.config.spawn:
            shm.janitor(self.config.shm_prefix)
            self.config.sweep_sockets()

    # -- for operators and tests ------------------------------------------------------------
    def status(self) -> dict[str, dict]:
        with self._lock:
            return {
                r: {"state": w.state, "pid": w.pid, "restarts": w.restarts, "last_exit": w.last_exit}
                for r, w in self.workers.items()
            }

    def pid(self, role: str) -> int | None:
        return self.workers[role].pid

    def kill(self, role: str, sig: int = signal.SIGKILL) -> int:
        """Send `sig` to a worker (tests: kill -9); returns its PID."""
        proc = self.workers[role].proc
        if proc is None:
            raise RuntimeError(f"{role} is not running")
        _kill(proc, sig)
        return proc.pid

    def wait_up(self, role: str, timeout: float = 120.0, *, after_restarts: int = 0) -> bool:
        """Wait until `role` serves again (and has been restarted at least `after_restarts` times)."""
        deadline = time.monotonic() + timeout
        w = self.workers[role]
        while time.monotonic() < deadline:
            if w.restarts >= after_restarts and w.ready.wait(0.1):
                return True
        return False


def _kill(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass
