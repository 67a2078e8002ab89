"""Rate limits: token buckets per API key (questions per minute) and per WebSocket (messages)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from streamvqa.proto import ApiError


class RetryLater(ApiError):
    """An :class:`ApiError` for a limit that frees up by itself: answered with ``Retry-After``."""

    def __init__(self, code: str, message: str, retry_after_s: int) -> None:
        super().__init__(code, message)
        self.retry_after_s = max(1, int(retry_after_s))


class TokenBucket:
    """``per_minute`` events a minute, bursts up to ``per_minute``; :meth:`take` says if allowed."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.tokens = float(per_minute)
        self.clock = clock
        self.stamp = clock()

    def take(self, n: float = 1.0) -> bool:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False

    def retry_after_s(self, n: float = 1.0) -> float:
        """Seconds until ``n`` tokens are there."""
        return max(0.0, (n - self.tokens) / self.rate)


class KeyedLimiter:
    """One :class:`TokenBucket` per key (e.g. per API key name); thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str, per_minute: int | None) -> bool:
        """Whether ``key`` may do one more thing now (``per_minute=None``: always)."""
        if per_minute is None:
            return True
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None or bucket.capacity != per_minute:
                bucket = self._buckets[key] = TokenBucket(per_minute, self.clock)
            return bucket.take()
