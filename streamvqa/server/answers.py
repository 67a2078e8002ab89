"""The answer path shared by REST and the WebSocket: validate, wait for ``at``, wait for a fair
turn (:mod:`.fair_queue`), ask, convert."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeGuard

from streamvqa.engine.protocols import AnswerEvent
from streamvqa.engine.types import Answer
from streamvqa.proto import AnswerResponse, ApiError, QuestionRequest, Timings

from .evidence import evidence_ranges
from .fair_queue import FairQueue
from .metrics import ServerMetrics
from .question_tokens import Counter, utf8_bytes
from .registry import StreamEntry, engine_error, session_stats
from .settings import ServerSettings


def is_answer(event: object) -> TypeGuard[Answer]:
    """The engine's final ``Answer`` (vs a ``TokenEvent``)."""
    return isinstance(event, Answer)


def to_response(answer: Answer, entry: StreamEntry | None = None, at: float | None = None) -> AnswerResponse:
    """Engine ``Answer`` -> :class:`AnswerResponse`, the one conversion to the HTTP wire (REST,
    WebSocket, OpenAI-compatible; evidence spans and clocks from ``entry``: evidence.py)."""
    fps, time_base = (entry.fps, entry.ingest_stats().time_base) if entry is not None else (None, None)
    timings = {k: float(v) for k, v in answer.timings.items() if k in Timings.model_fields}
    evidence = evidence_ranges(answer.evidence, fps, time_base, at)
    if entry is not None and entry.thumbnails is not None:  # keep the evidence's pictures longest
        entry.thumbnails.cite(entry.id, [e.t_start for e in evidence])
    return AnswerResponse(
        answer=answer.text,
        evidence=evidence,
        timings=Timings(**timings),
        tokens=len(answer.token_ids),
        finish_reason=answer.finish_reason or "stop",
        tiers={str(k): int(v) for k, v in answer.tiers.items()},
    )


def queue_key(entry: StreamEntry) -> str:
    """Whose turn a question takes in the fair queue: the API key; with auth off (no keys), the
    stream, so one stream's backlog cannot hold up another's."""
    return entry.owner if entry.owner is not None else f"stream:{entry.id}"


class AnswerService:
    """Asks one stream's engine session a question and streams its events.

    ``count_tokens``: the model's question token counter (set once the engine is loaded);
    ``in_flight_cap(owner)``: the key's cap on questions queued or running (None: none).
    """

    def __init__(
        self,
        settings: ServerSettings,
        metrics: ServerMetrics,
        in_flight_cap: Callable[[str], int | None] | None = None,
        slots: int = 1,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.count_tokens: Counter = utf8_bytes
        self.in_flight_cap = in_flight_cap or (lambda owner: None)
        self.queue = FairQueue(slots)

    def check(self, req: QuestionRequest) -> dict[str, Any]:
        """Server limits on a question; returns the keyword arguments for ``session.ask``.
        Characters first (a cheap bound on the tokenizer's work), then the model's tokens."""
        s = self.settings
        if len(req.question) > s.max_question_chars:
            raise ApiError(
                "question_too_long", f"question has {len(req.question)} characters; limit {s.max_question_chars}"
            )
        n_tokens = self.count_tokens(req.question)
        if n_tokens > s.max_question_tokens:
            raise ApiError(
                "question_too_long", f"question has {n_tokens} tokens; limit {s.max_question_tokens} tokens"
            )
        if not req.question.strip():
            raise ApiError("invalid_request", "question is blank")
        if req.max_tokens is not None and req.max_tokens > s.max_tokens:
            raise ApiError("invalid_request", f"max_tokens {req.max_tokens} exceeds the limit {s.max_tokens}")
        return {
            "max_tokens": req.max_tokens or s.default_max_tokens,
            "temperature": 0.0 if req.temperature is None else req.temperature,
            "top_p": 1.0 if req.top_p is None else req.top_p,
            **({"at": req.at} if req.at is not None else {}),
        }

    async def wait_for_time(self, entry: StreamEntry, at: float) -> None:
        """Wait (bounded) until the stream was encoded up to stream time ``at`` or its ingest ended."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.at_wait_timeout_s
        while loop.time() < deadline:
            last = session_stats(entry.session).get("last_frame_t")
            if last is not None and last >= at:
                return
            if entry.source.state.is_final:
                return
            await asyncio.sleep(0.05)

    async def events(self, entry: StreamEntry, req: QuestionRequest) -> AsyncIterator[AnswerEvent]:
        """Token events, then the final answer; errors as :class:`ApiError`. Counts the outcome."""
        limit = self.settings.max_questions_per_stream
        if entry.active_questions >= limit:
            raise ApiError("too_many_questions", f"at most {limit} questions at once per stream")
        entry.active_questions += 1
        ok = False
        try:
            kwargs = self.check(req)
            if req.at is not None:
                await self.wait_for_time(entry, req.at)
            cap = self.in_flight_cap(entry.owner) if entry.owner is not None else None
            final: Answer | None = None
            queued = time.perf_counter()
            async with self.queue.turn(queue_key(entry), cap):
                waited = time.perf_counter() - queued
                try:
                    async for ev in entry.session.ask(req.question, **kwargs):
                        if isinstance(ev, Answer):  # yielded after the turn ends: a slow reader holds no turn
                            final = ev
                        else:
                            yield ev
                except ApiError:
                    raise
                except Exception as e:
                    raise engine_error(e) from e
            if final is not None:
                ok = True
                for k in ("queue_s", "total_s"):  # the fair queue's wait is queueing too
                    final.timings[k] = float(final.timings.get(k, 0.0)) + waited
                yield final
        finally:
            entry.active_questions -= 1
            self.metrics.question_done(ok)

    async def answer(self, entry: StreamEntry, req: QuestionRequest) -> AnswerResponse:
        """The whole answer (REST)."""
        final: Answer | None = None
        async for ev in self.events(entry, req):
            if isinstance(ev, Answer):
                final = ev
        if final is None:
            raise ApiError("internal_error", "the engine finished without an answer")
        return to_response(final, entry, req.at)
