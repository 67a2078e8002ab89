"""``WS /v1/streams/{id}/ws``: many concurrent questions per connection, tokens streamed.

Every client message is ``{"type": "question", "request_id": ..., "question": ..., ...}``; the
server answers with ``token`` messages (``index`` from 0), then one ``answer`` (full text), or
one ``error``, all carrying that ``request_id``. Each question runs in its own task; one sender
task drains a bounded per-connection queue, so a slow reader never blocks the engine or other
connections: when the queue is full, ``token`` messages for that connection are dropped (the
``answer`` still carries the full text; index gaps show the drop), and a reader that cannot take
a final message within ``ws_send_timeout_s`` is disconnected.

Security: the connection belongs to one API key (checked by the endpoint before this class
runs); a stream of another key is ``unknown_stream``; client messages are limited in size
(``payload_too_large``) and rate (``ws_messages_per_minute``, then ``rate_limited``), and
questions count against the key's questions per minute (``rate_limited``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from streamvqa.proto import ApiError, WsAnswer, WsError, WsQuestion, WsToken

from .answers import AnswerService, is_answer, to_response
from .auth import ANONYMOUS, Principal
from .errors import public_error
from .limits import TokenBucket
from .registry import StreamRegistry, failed_stream_error

log = logging.getLogger(__name__)

CLOSE_UNKNOWN_STREAM = 4404
CLOSE_SLOW_READER = 4008
CLOSE_UNAUTHORIZED = 4401


class WsConnection:
    """One accepted WebSocket for one stream."""

    def __init__(
        self,
        ws: WebSocket,
        stream_id: str,
        registry: StreamRegistry,
        answers: AnswerService,
        principal: Principal = ANONYMOUS,
        take_question: Callable[[Principal], None] | None = None,
        subprotocol: str | None = None,
        redact: Callable[[str], str] = str,
    ) -> None:
        settings = answers.settings
        self.redact = redact
        self.principal = principal
        self.take_question = take_question
        self.subprotocol = subprotocol
        self.message_rate = TokenBucket(settings.ws_messages_per_minute)
        self.ws = ws
        self.stream_id = stream_id
        self.registry = registry
        self.answers = answers
        self.max_message_bytes = settings.max_ws_message_bytes
        self.max_concurrent = settings.ws_max_concurrent_questions
        self.send_timeout_s = settings.ws_send_timeout_s
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(settings.ws_send_queue)
        self.active: dict[str, asyncio.Task[None]] = {}
        self.tokens_dropped = 0
        self.closed = asyncio.Event()

    # -- sending ------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        try:
            while True:
                text = await self.queue.get()
                if text is None:
                    return
                await self.ws.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:
            self.closed.set()

    def _offer(self, msg: Any) -> None:
        """Best-effort enqueue (token messages): dropped when the reader is behind."""
        try:
            self.queue.put_nowait(msg.model_dump_json())
        except asyncio.QueueFull:
            self.tokens_dropped += 1

    async def _put(self, msg: Any) -> None:
        """Reliable enqueue (answers, errors); a reader too slow for this is disconnected."""
        try:
            await asyncio.wait_for(self.queue.put(msg.model_dump_json()), self.send_timeout_s)
        except TimeoutError:
            log.warning("ws %s: reader too slow, closing", self.stream_id)
            self.closed.set()
            with contextlib.suppress(Exception):
                await self.ws.close(CLOSE_SLOW_READER, "reader too slow")

    async def _error(self, request_id: str | None, code: str, message: str) -> None:
        """An ``error`` as the REST handlers render it: documented code, no internals (an
        ``internal_error`` carries the log's id as ``error.request_id``)."""
        body, _ = public_error(code, message, 500, self.redact)
        await self._put(WsError(request_id=request_id, error=body.model_dump()["error"]))

    # -- questions ----------------------------------------------------------------------------

    async def _answer(self, q: WsQuestion) -> None:
        rid = q.request_id
        entry = None
        try:
            entry = self.registry.get(self.stream_id, self.principal.owner)
            async for ev in self.answers.events(entry, q):
                if is_answer(ev):
                    resp = to_response(ev, entry, q.at)
                    await self._put(WsAnswer(request_id=rid, **resp.model_dump()))
                else:
                    self._offer(WsToken(request_id=rid, index=int(ev.index), text=ev.text))
        except ApiError as e:
            err = failed_stream_error(entry, e) if entry is not None else e
            await self._error(rid, err.code, err.message)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # never let one question kill the connection
            log.exception("ws question %s failed", rid)
            await self._error(rid, "internal_error", f"{type(e).__name__}: {e}")
        finally:
            self.active.pop(rid, None)

    async def _handle(self, raw: str | bytes) -> None:
        if not self.message_rate.take():
            await self._error(None, "rate_limited", "too many messages on this connection; slow down")
            return
        size = len(raw.encode() if isinstance(raw, str) else raw)
        if size > self.max_message_bytes:
            await self._error(None, "payload_too_large", f"message of {size} bytes; limit {self.max_message_bytes}")
            return
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError; too deep: RecursionError
            await self._error(None, "malformed_json", f"not JSON: {type(e).__name__}")
            return
        rid = data.get("request_id") if isinstance(data, dict) else None
        rid = rid if isinstance(rid, str) else None
        if not isinstance(data, dict) or data.get("type") != "question":
            await self._error(rid, "invalid_request", 'expected {"type": "question", "request_id": ..., ...}')
            return
        try:
            q = WsQuestion.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            await self._error(rid, "invalid_request", f"{loc}: {err['msg']}")
            return
        if q.request_id in self.active:
            await self._error(q.request_id, "invalid_request", "request_id already in use on this connection")
            return
        if len(self.active) >= self.max_concurrent:
            await self._error(q.request_id, "too_many_questions", f"at most {self.max_concurrent} at once")
            return
        if self.take_question is not None:
            try:
                self.take_question(self.principal)
            except ApiError as e:
                await self._error(q.request_id, e.code, e.message)
                return
        self.active[q.request_id] = asyncio.create_task(self._answer(q))

    async def run(self) -> None:
        """Accept, serve until the client disconnects, then cancel what is still running."""
        if self.subprotocol:
            await self.ws.accept(subprotocol=self.subprotocol)
        else:
            await self.ws.accept()
        sender = asyncio.create_task(self._send_loop())
        try:
            try:
                self.registry.get(self.stream_id, self.principal.owner)
            except ApiError as e:
                await self._error(None, e.code, e.message)
                await self.queue.put(None)
                await sender
                await self.ws.close(CLOSE_UNKNOWN_STREAM, e.code)
                return
            while not self.closed.is_set():
                msg = await self.ws.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                raw = msg.get("text")
                if raw is None:
                    raw = msg.get("bytes") or b""
                await self._handle(raw)
        except WebSocketDisconnect:
            pass
        finally:
            for task in list(self.active.values()):
                task.cancel()
            for task in list(self.active.values()):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if not sender.done():
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sender
