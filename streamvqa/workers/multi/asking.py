"""Answering one `Ask` over a session, shared by the answer worker (`ans.ask`, over a replica)
and the encoder (`enc.ask`, over the stream's own session when its state is not in the store).

Tokens stream back as `TokenMsg` events, the answer as the final `AnswerMsg`. A question whose
caller went away is named in `Cancels` (`*.cancel`) and stops at its next token.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace

from streamvqa.engine.protocols import Session
from streamvqa.engine.types import Answer, TokenEvent
from streamvqa.proto import ipc
from streamvqa.workers.multi import wire


class Cancels:
    """Ask ids whose caller went away (thread-safe; a worker serves asks on several threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: set[str] = set()
        self.total = 0  # questions actually stopped (ping reports it; tests wait on it)

    def add(self, ask_id: str) -> None:
        with self._lock:
            self._ids.add(ask_id)

    def hit(self, ask_id: str | None) -> bool:
        if ask_id is None:
            return False
        with self._lock:
            if ask_id in self._ids:
                self.total += 1
                return True
            return False

    def discard(self, ask_id: str | None) -> None:
        if ask_id is not None:
            with self._lock:
                self._ids.discard(ask_id)


def answer_ask(session: Session, body: ipc.Ask, emit: Callable[[ipc.TokenMsg], None], cancels: Cancels,
               skipped: list[int] | None = None, degraded: list[str] | None = None) -> ipc.AnswerMsg:
    """Run stages 7-9 of `session` for `body`, emitting tokens; `skipped` are blocks the answer
    could not read (a tier down), `degraded` the tiers that were down."""
    answer: Answer | None = None
    it = session.events(body.question, max_tokens=body.max_tokens, temperature=body.temperature,
                        top_p=body.top_p, at=body.at, seed=body.seed)
    try:
        for ev in it:
            if isinstance(ev, TokenEvent):
                if cancels.hit(body.ask_id):
                    raise ipc.IpcError("cancelled", "the caller went away")
                emit(wire.to_wire(ev))
            else:
                answer = ev
    finally:
        it.close()  # a cancelled answer leaves no answer cache behind (the next one rebuilds it)
        cancels.discard(body.ask_id)
    assert answer is not None
    tiers = dict(answer.tiers)
    if skipped:
        tiers["unavailable"] = len(skipped)
    return wire.to_wire(replace(answer, tiers=tiers, degraded=list(degraded or [])))
