"""Blocking source work off the shared thread pool: probes in a small bounded pool with a
deadline, stopping sources in a pool of its own.

``asyncio.to_thread`` shares the loop's default executor (a handful of threads) with ``/metrics``,
DNS lookups and the engine's answer steps. A probe of a source that never answers holds its
thread until FFmpeg's own timeout, so a burst of such probes used to stall every other endpoint.
Here at most ``workers`` probes run at once (a probe stuck in FFmpeg keeps its slot until it
returns, so stuck probes cannot pile up threads); a probe that has not finished, waiting for a
slot included, within ``timeout_s`` answers ``probe_timeout`` (504) right away.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from streamvqa.proto import ApiError

T = TypeVar("T")


class SourcePool:
    """``probe(fn, *args)``: bounded and timed; ``run(fn, *args)``: other blocking source calls
    (stopping a decode thread), on threads that probes never use."""

    def __init__(self, workers: int, timeout_s: float, lifecycle_workers: int = 16) -> None:
        self.workers = workers
        self.timeout_s = timeout_s
        self._probes = ThreadPoolExecutor(workers, thread_name_prefix="svqa-probe")
        self._lifecycle = ThreadPoolExecutor(lifecycle_workers, thread_name_prefix="svqa-source")
        self._slots: asyncio.Semaphore | None = None  # made on the loop that uses it
        self.running = 0  # probes on a thread (including ones whose caller timed out)
        self.waiting = 0  # probes waiting for a slot

    def _sem(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.workers)
        return self._slots

    def _timeout(self) -> ApiError:
        return ApiError("probe_timeout", f"the source did not answer the probe within {self.timeout_s:g} s", 504)

    async def probe(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a probe thread; ``probe_timeout`` after ``timeout_s`` in all."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        sem = self._sem()
        self.waiting += 1
        try:
            await asyncio.wait_for(sem.acquire(), self.timeout_s)
        except TimeoutError:
            raise self._timeout() from None
        finally:
            self.waiting -= 1
        self.running += 1
        result: asyncio.Future[T] = loop.create_future()

        def finish(f: Future[T]) -> None:  # on the loop: the slot frees when the thread does
            self.running -= 1
            sem.release()
            if result.done():  # the caller timed out; nobody wants the outcome
                return
            if f.cancelled():  # the pool shut down
                result.cancel()
            else:
                exc = f.exception()
                if exc is not None:
                    result.set_exception(exc)
                else:
                    result.set_result(f.result())

        def done(f: Future[T]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(finish, f)

        try:
            self._probes.submit(fn, *args).add_done_callback(done)
        except BaseException:
            self.running -= 1
            sem.release()
            raise
        try:
            return await asyncio.wait_for(result, max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise self._timeout() from None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._lifecycle, fn, *args)

    def close(self) -> None:
        """Stop taking work; threads still inside FFmpeg end on their own (bounded by its timeouts)."""
        for pool in (self._probes, self._lifecycle):
            with contextlib.suppress(Exception):
                pool.shutdown(wait=False, cancel_futures=True)
