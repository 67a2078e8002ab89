"""Fair admission to the model: per-key FIFOs served round-robin, a few questions at a time.

The engine's model lock is not fair (any waiting thread may get it next) and a question holds it
for its whole prefill, so without this one key's backlog of long questions delays every other
key's question by the whole backlog. Here a question first takes one of ``slots`` turns; when a
turn frees, the next key in rotation that has a question waiting gets it. Another key's question
therefore waits for at most the questions already holding turns (one with the default single
slot), never for a key's whole backlog: the turn goes to the waiting key served least recently. Each key may also have at most ``cap`` questions queued
or running (``too_many_questions``, 429 with Retry-After).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator

from .limits import RetryLater


class FairQueue:
    """Turns for ``slots`` concurrent questions, handed out round-robin across keys.

    All methods run on one event loop (no locks). ``order`` records the keys in the order they
    were granted a turn (last 1024), for tests and debugging.
    """

    def __init__(self, slots: int = 1) -> None:
        if slots < 1:
            raise ValueError("slots must be >= 1")
        self.slots = slots
        self.running = 0
        self._waiting: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()
        self._in_flight: dict[str, int] = {}
        self._served: dict[str, int] = {}  # key -> grant number of its latest turn (while in flight)
        self._grants = 0
        self.order: deque[str] = deque(maxlen=1024)
        self.mean_turn_s = 1.0  # moving average of a turn's length: the Retry-After estimate

    def in_flight(self, key: str) -> int:
        """Questions of ``key`` queued or holding a turn."""
        return self._in_flight.get(key, 0)

    @property
    def queued(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    def retry_after_s(self) -> int:
        return max(1, math.ceil(self.mean_turn_s))

    @contextlib.asynccontextmanager
    async def turn(self, key: str, cap: int | None = None) -> AsyncIterator[None]:
        """Hold a turn for the body. ``RetryLater(too_many_questions)`` when ``key`` already has
        ``cap`` questions queued or running; cancellation while queued gives up the place."""
        if cap is not None and self.in_flight(key) >= cap:
            raise RetryLater(
                "too_many_questions", f"at most {cap} questions queued or running per API key",
                self.retry_after_s(),
            )
        self._in_flight[key] = self.in_flight(key) + 1
        try:
            await self._acquire(key)
            started = time.monotonic()
            try:
                yield
            finally:
                self.mean_turn_s = 0.8 * self.mean_turn_s + 0.2 * (time.monotonic() - started)
                self._release()
        finally:
            n = self._in_flight[key] - 1
            if n:
                self._in_flight[key] = n
            else:  # nothing left in flight: forget the key (it has no backlog to be fair about)
                del self._in_flight[key]
                self._served.pop(key, None)

    async def _acquire(self, key: str) -> None:
        if self.running < self.slots and not self._waiting:
            self._grant(key)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, deque()).append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # granted and cancelled at once: pass it on
                self._release()
            else:
                self._forget(key, fut)
            raise

    def _forget(self, key: str, fut: asyncio.Future[None]) -> None:
        q = self._waiting.get(key)
        if q is not None:
            with contextlib.suppress(ValueError):
                q.remove(fut)
            if not q:
                del self._waiting[key]

    def _grant(self, key: str) -> None:
        self.running += 1
        self._grants += 1
        self._served[key] = self._grants
        self.order.append(key)

    def _release(self) -> None:
        """Free a turn and grant it to the oldest question of the waiting key served least
        recently (keys not served yet first, in arrival order)."""
        self.running -= 1
        while self._waiting and self.running < self.slots:
            key = min(self._waiting, key=lambda k: self._served.get(k, 0))
            q = self._waiting[key]
            fut = q.popleft()
            if not q:
                del self._waiting[key]
            if fut.done():  # cancelled while waiting
                continue
            self._grant(key)
            fut.set_result(None)
