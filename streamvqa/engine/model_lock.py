"""The model lock: one turn at the model at a time, granted in arrival order.

A plain `threading.Lock` lets whoever is scheduled first win, so a busy encoder that takes the
lock again right after releasing it can keep a question waiting for a whole backlog (and a long
answer can do the same to encoding). Here turns are first come, first served: a question waits
at most for the turns queued before it (a batched encode forward, an encode's bookkeeping, a
generated token), and between two answer tokens the encoder gets its queued turn. That is the
rule by which encoding and questions share the device (docs/architecture.md, "Many streams").
"""

from __future__ import annotations

import threading
from collections import deque


class ModelLock:
    """A FIFO, non-reentrant lock with the `threading.Lock` interface the engine uses."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._owner: int | None = None
        # one condition per waiter: a release wakes the next in line only, not every waiter
        self._queue: deque[threading.Condition] = deque()
        self._front: deque[threading.Condition] = deque()  # hand-offs promised by `expect_front`
        self._expected = 0

    def acquire(self, blocking: bool = True, timeout: float = -1, front: bool = False) -> bool:
        """`front`: a turn promised by `expect_front` (goes before every ordinary waiter)."""
        queue = self._front if front else self._queue
        with self._mutex:
            if self._free(None, front):
                return self._take(front)
            if not blocking:
                return False
            me = threading.Condition(self._mutex)
            queue.append(me)
            ok = me.wait_for(lambda: self._free(me, front), None if timeout is None or timeout < 0 else timeout)
            queue.remove(me)
            if not ok:
                self._wake()  # the next in line may be free to go now
                return False
            return self._take(front)

    def _free(self, me: threading.Condition | None, front: bool) -> bool:
        """Whether `me` (None: a newcomer) may take the lock now."""
        if self._owner is not None:
            return False
        if front:
            return (self._front[0] is me) if self._front else me is None
        if self._front or self._expected:
            return False
        return (self._queue[0] is me) if self._queue else me is None

    def _take(self, front: bool) -> bool:
        self._owner = threading.get_ident()
        if front:
            self._expected = max(0, self._expected - 1)
        return True

    def _wake(self) -> None:
        if self._owner is not None:
            return
        if self._front:
            self._front[0].notify()
        elif self._queue and not self._expected:
            self._queue[0].notify()

    def expect_front(self, n: int) -> None:
        """Promise the next `n` turns to `acquire(front=True)` callers (the holder calls this):
        the encodes of a batch commit their results before anyone else sees their caches."""
        with self._mutex:
            self._expected += n

    def release(self) -> None:
        with self._mutex:
            if self._owner is None:
                raise RuntimeError("release of an unlocked ModelLock")
            self._owner = None
            self._wake()

    def owned(self) -> bool:
        """Whether the calling thread holds the lock."""
        return self._owner == threading.get_ident()

    def locked(self) -> bool:
        return self._owner is not None

    def __enter__(self) -> ModelLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
