"""Hands sampled frames to a (possibly slow) sink without ever blocking the decoder.

A bounded queue sits between the decode thread and one consumer thread that calls the sink.
When the queue is full the OLDEST queued frame is dropped (the newest is always kept) and counted
with reason ``encoder_behind``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

from .frames import Frame
from .stats import DROP_ENCODER_BEHIND, DROP_SINK_ERROR, IngestCounters

log = logging.getLogger(__name__)

Sink = Callable[[Frame], None]


class FrameDelivery:
    """Bounded drop-oldest queue plus the consumer thread that feeds ``sink``."""

    def __init__(self, sink: Sink, queue_size: int, counters: IngestCounters, name: str = "ingest") -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self._sink = sink
        self._counters = counters
        self._queue: collections.deque[Frame] = collections.deque()
        self._queue_size = queue_size
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"{name}-deliver", daemon=True)

    def start(self) -> FrameDelivery:
        """Start the consumer thread (frames submitted before are kept, up to ``queue_size``)."""
        self._thread.start()
        return self

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    def submit(self, frame: Frame) -> None:
        """Queue ``frame`` for the sink; never blocks. Drops the oldest queued frame when full."""
        with self._cond:
            if self._closed:
                return
            while len(self._queue) >= self._queue_size:
                self._queue.popleft()
                self._counters.dropped(DROP_ENCODER_BEHIND)
            self._queue.append(frame)
            self._cond.notify_all()

    def drain(self, timeout: float | None = None, should_stop: Callable[[], bool] | None = None) -> bool:
        """Wait until every queued frame has been handed to the sink. Returns False on timeout/stop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._thread.ident is None:
            return not self._queue
        with self._cond:
            while self._queue or self._busy:
                if should_stop is not None and should_stop():
                    return False
                remaining = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def close(self, timeout: float = 5.0) -> bool:
        """Stop the consumer, discarding frames still queued. Returns True if it exited in time."""
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._cond.notify_all()
        if self._thread.ident is not None and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                frame = self._queue.popleft()
                self._busy = True
            try:
                self._sink(frame)
            except Exception:
                log.exception("ingest sink failed on frame t=%.3f", frame.t)
                self._counters.dropped(DROP_SINK_ERROR)
            else:
                self._counters.delivered(frame.t)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
