"""Small test helpers: a collecting sink (bounded polling: `tests.helpers.wait_until`)."""

from __future__ import annotations

import threading
import time

from streamvqa.workers.ingest import Frame
from tests.helpers import wait_until  # noqa: F401 - shared polling helper, used by this package


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
