"""The engine boundary the server talks to: `Engine` and `Session` (as `store/base.py` does for
`BlockStore`).

Two implementations: the embedded one (`engine/engine.py`'s `Engine`, `engine/session.py`'s
`StreamSession`) and the multi-process one (`workers/multi/facade.py`'s `MultiEngine` and
`RemoteSession`). `tests/engine/test_protocols.py` checks both structurally (members and
signatures), so the two cannot drift apart.

A question's events are one type, `AnswerEvent`: `TokenEvent`s, then one final `Answer`.
`Session.events` is the blocking stream; `ask` and `answer` are derived from it the same way for
every session (`stream_in_thread`, `final_answer`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Generator, Iterable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from streamvqa.engine.errors import EngineError
from streamvqa.engine.types import Answer, SessionStats, TokenEvent

if TYPE_CHECKING:
    import numpy as np

AnswerEvent = TokenEvent | Answer  # what a question streams: tokens, then the final Answer

T = TypeVar("T")


@runtime_checkable
class EngineObserver(Protocol):
    """Told of encoding and answering as it happens (the server's metrics)."""

    def on_unit_encoded(self, stream_id: str, seconds: float, frames: int) -> None: ...

    def on_token(self, stream_id: str, seconds: float) -> None:
        """Inter-token latency: the gap since the previous token (the first one is not reported)."""

    def on_answer(self, stream_id: str, answer: Answer) -> None: ...


@runtime_checkable
class Session(Protocol):
    """One live stream: frames in, questions answered."""

    stream_id: str
    method: str  # the preset (canonical name)
    closed: bool

    def push_frame(self, image: np.ndarray, t: float) -> None:
        """One decoded frame (HxWx3 uint8 RGB) at presentation time t (seconds); blocks until taken
        (backpressure). `EngineError` `stream_closed` / `invalid_frame`."""

    def stats(self) -> SessionStats: ...

    def events(self, question: str, *, max_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
               at: float | None = None, seed: int | None = None) -> Generator[AnswerEvent, None, None]:
        """Tokens, then the Answer; blocking (run it off the event loop). Closing the iterator early
        abandons the question (the work stops at the next token)."""

    def answer(self, question: str, *, max_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
               at: float | None = None, seed: int | None = None) -> Answer:
        """The whole answer, blocking."""

    def ask(self, question: str, *, max_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
            at: float | None = None, seed: int | None = None) -> AsyncIterator[AnswerEvent]:
        """`events` for the event loop: model work runs in a thread."""

    def close(self) -> None: ...


@runtime_checkable
class Engine(Protocol):
    """A model and the live sessions that share it."""

    observers: list[EngineObserver]

    def methods(self) -> list[str]:
        """The method presets a stream may be opened with."""

    def model_info(self) -> dict[str, Any]:
        """name, family, device, dtype, layers, fingerprint (multi adds topology)."""

    def open_stream(self, stream_id: str, method: str = "rekv", options: dict | None = None) -> Session:
        """`EngineError`: `stream_exists`, `unknown_method`, `invalid_options`, `worker_unavailable`."""

    def get(self, stream_id: str) -> Session:
        """`EngineError` `unknown_stream`."""

    def close_stream(self, stream_id: str) -> None: ...

    def health(self) -> dict[str, Any]:
        """For `/ready`: ``ok`` (False: not ready), ``degraded`` (parts down, still ready), detail."""

    def collectors(self) -> list[Any]:
        """Prometheus collectors of this topology, registered next to the server's own."""

    def tokenizer(self) -> Any | None:
        """The model's tokenizer when it is loaded in this process (None: the model is elsewhere)."""

    def close(self) -> None: ...


async def stream_in_thread(it: Generator[T, None, None]) -> AsyncIterator[T]:
    """A blocking generator read from the event loop, one `next` per thread hop. Abandoned (the
    consumer stops early or is cancelled), the iterator is closed, so the question's work and
    resources (an answer cache, a worker's socket) end with it."""
    done = object()
    try:
        while True:
            ev = await asyncio.to_thread(next, it, done)
            if ev is done:
                return
            yield ev  # type: ignore[misc]
    finally:
        try:
            await asyncio.to_thread(it.close)
        except (ValueError, RuntimeError):  # still running in a cancelled to_thread: it ends on its own
            pass


def final_answer(events: Iterable[AnswerEvent]) -> Answer:
    """The Answer that ends a question's events."""
    answer = None
    for ev in events:
        answer = ev
    if not isinstance(answer, Answer):
        raise EngineError("internal_error", "the question ended without an answer")
    return answer
