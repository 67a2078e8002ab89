"""A small engine double for fault injection only (everything else runs the real engine).
It implements the `Engine` / `Session` protocols (tests/engine/test_protocols.py checks it)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Generator
from typing import Any

from streamvqa.engine import Answer, EngineError, SessionStats, TokenEvent
from streamvqa.engine.protocols import EngineObserver, final_answer


class SessionDouble:
    """Accepts frames; ``ask`` can block on ``gate``, raise ``fail``, or stream ``n_tokens``."""

    def __init__(self, engine: EngineDouble, stream_id: str, method: str) -> None:
        self.engine = engine
        self.stream_id = stream_id
        self.method = method
        self.frames = 0
        self.last_t: float | None = None
        self.closed = False
        self._lock = threading.Lock()

    def push_frame(self, image: Any, t: float) -> None:
        with self._lock:
            self.frames += 1
            self.last_t = t

    def stats(self) -> SessionStats:
        with self._lock:
            return SessionStats(method=self.method, frames_received=self.frames, frames_encoded=self.frames,
                                units_encoded=self.frames, last_frame_t=self.last_t,
                                kv_bytes={"host": 10 * self.frames}, kv_blocks={"host": self.frames})

    def events(self, question: str, *, max_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
               at: float | None = None, seed: int | None = None) -> Generator[TokenEvent | Answer, None, None]:
        if self.engine.fail is not None:
            raise self.engine.fail
        self.engine.gate.wait(30)
        yield from self._answer()

    def answer(self, question: str, *, max_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
               at: float | None = None, seed: int | None = None) -> Answer:
        return final_answer(self.events(question))

    async def ask(self, question: str, *, max_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
                  at: float | None = None, seed: int | None = None) -> AsyncIterator[TokenEvent | Answer]:
        if self.engine.fail is not None:
            raise self.engine.fail
        await asyncio.to_thread(self.engine.gate.wait, 30)
        for ev in self._answer():
            yield ev

    def _answer(self) -> Generator[TokenEvent | Answer, None, None]:
        for k in range(self.engine.n_tokens):
            yield TokenEvent(f"t{k} ", k, k)
        yield Answer(text="done", token_ids=list(range(self.engine.n_tokens)), evidence=[(0.0, 1.0)],
                     timings={"total_s": 0.01}, finish_reason="length")

    def close(self) -> None:
        self.closed = True


class EngineDouble:
    """``Engine`` API shape; ``fail`` (exception for ``ask``), ``gate`` (ask waits on it), ``store_ok``."""

    def __init__(self) -> None:
        self.observers: list[EngineObserver] = []
        self.sessions: dict[str, SessionDouble] = {}
        self.fail: BaseException | None = None
        self.gate = threading.Event()
        self.gate.set()
        self.n_tokens = 3
        self.store_ok = True

    def model_info(self) -> dict:
        return {"name": "double", "family": "double", "device": "cpu", "dtype": "float32", "layers": 1,
                "fingerprint": "double"}

    def methods(self) -> list[str]:
        return ["rekv", "full"]

    def open_stream(self, stream_id: str, method: str = "rekv", options: dict | None = None) -> SessionDouble:
        if options:
            raise EngineError("invalid_options", f"unknown options {sorted(options)}")
        self.sessions[stream_id] = SessionDouble(self, stream_id, method)
        return self.sessions[stream_id]

    def get(self, stream_id: str) -> SessionDouble:
        if stream_id not in self.sessions:
            raise EngineError("unknown_stream", f"no stream {stream_id!r}")
        return self.sessions[stream_id]

    def close_stream(self, stream_id: str) -> None:
        self.sessions.pop(stream_id, None)

    def collectors(self) -> list[Any]:
        return []

    def tokenizer(self) -> Any | None:
        return None

    def close(self) -> None:
        self.sessions.clear()

    def health(self) -> dict:
        return {"ok": self.store_ok, "degraded": [] if self.store_ok else ["redis"]}
