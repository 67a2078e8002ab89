"""Small test helpers: a collecting sink and bounded polling."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from streamvqa.workers.ingest import Frame


class CollectingSink:
    """A sink that records every frame it receives (optionally slowly)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.frames: list[Frame] = []
        self._lock = threading.Lock()

    def __call__(self, frame: Frame) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
        with self._lock:
            self.frames.append(frame)

    def snapshot(self) -> list[Frame]:
        with self._lock:
            return list(self.frames)

    def __len__(self) -> int:
        with self._lock:
            return len(self.frames)


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``pred`` until it is true or ``timeout`` seconds have passed (bounded loop)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()
