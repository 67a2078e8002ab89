"""Worker process plumbing: run an RpcServer until SIGTERM/SIGINT, and exit when the supervisor
that started us is gone (no orphans holding shared memory or sockets)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable

from streamvqa.workers.multi.rpc import RpcServer

log = logging.getLogger(__name__)


def watch_parent(parent_pid: int, on_gone: Callable[[], None], interval: float = 0.5) -> None:
    """Call `on_gone` once the parent process has exited (we were re-parented)."""

    def run() -> None:
        ev = threading.Event()
        while not ev.wait(interval):
            if os.getppid() != parent_pid:
                log.warning("supervisor %d is gone; exiting", parent_pid)
                on_gone()
                return

    threading.Thread(target=run, name="parent-watch", daemon=True).start()


def run_until_signal(server: RpcServer, on_close: Callable[[], None] | None = None) -> None:
    def stop(*_):
        server.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    parent = os.environ.get("STREAMVQA_SUPERVISOR_PID")
    if parent and parent.isdigit():
        watch_parent(int(parent), server.stop)
    log.info("serving %s (pid %d)", server.endpoint, os.getpid())
    try:
        server.serve_forever()
    finally:
        if on_close is not None:
            on_close()
