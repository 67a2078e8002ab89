"""Where an adapter's model calls go while a thread encodes under the encode scheduler.

The encode scheduler (`streamvqa/engine/encode_scheduler.py`) marks each thread that encodes a
stream's frame. While marked, `ModelAdapter.forward` and `ModelAdapter.unit_piece` hand their
work to the scheduler's batcher, which runs the calls of every stream waiting at the same moment
as one vision batch and one decoder forward (`engine/batch_forward.py`), then returns each
thread its own result. Unmarked threads (questions, tests, offline tools) call the model
directly, as before.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

_local = threading.local()


class Batcher(Protocol):
    def vision(self, adapter, frames: list, t_start: float) -> list: ...

    def forward(self, adapter, embeds, positions, cache, logits: str): ...


def current() -> Batcher | None:
    """The batcher of this thread's encode, or None (call the model directly)."""
    return getattr(_local, "batcher", None)


@contextmanager
def using(batcher: Batcher | None) -> Iterator[None]:
    """Route this thread's model calls to `batcher` (None: directly to the model)."""
    before = current()
    _local.batcher = batcher
    try:
        yield
    finally:
        _local.batcher = before


@contextmanager
def capturing(cap) -> Iterator[None]:
    """Register an open capture of this thread: its next batched forward fills it."""
    stack = open_captures()
    stack.append(cap)
    try:
        yield
    finally:
        stack.remove(cap)


def open_captures() -> list:
    if not hasattr(_local, "captures"):
        _local.captures = []
    return _local.captures


def routed_vision(fn):
    """Wrap a family's `unit_piece` so a marked thread's call joins the vision batch."""

    @functools.wraps(fn)
    def unit_piece(self, frames, t_start):
        batcher = current()
        if batcher is None:
            return fn(self, frames, t_start)
        return batcher.vision(self, frames, t_start)

    unit_piece.direct = fn
    return unit_piece
