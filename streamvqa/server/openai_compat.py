"""OpenAI-compatible chat: ``POST /v1/chat/completions`` and ``GET /v1/models[/{model}]``.

A "model" names one of the caller's streams (``stream:<id>``); the last user message is the
question, asked through the same :class:`~.answers.AnswerService` path (per-stream limit, fair
queue, per-key caps) as ``POST /v1/streams/{id}/questions``. Errors use OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``; ``code`` is the streamvqa code (docs/api.md)
except ``model_not_found``. See docs/api.md "OpenAI-compatible chat".
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamvqa.proto import ApiError, QuestionRequest

from .answers import is_answer, to_response
from .auth import ANONYMOUS, Principal
from .errors import public_error
from .registry import StreamEntry, failed_stream_error

log = logging.getLogger(__name__)

MODEL_PREFIX = "stream:"
PATHS = ("/v1/chat/completions", "/v1/models")
#: OpenAI's error ``type`` per HTTP status (anything else 4xx: ``invalid_request_error``)
_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
#: request fields that would change the answer's meaning and that the engine cannot honour
_REFUSED = ("tools", "functions", "tool_choice", "function_call", "logprobs", "top_logprobs",
            "response_format", "audio")


# -- request ---------------------------------------------------------------------------------------


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_calls, ...: accepted, not used

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The fields streamvqa reads; other OpenAI fields (``seed``, ``user``, penalties, ``metadata``,
    ...) are accepted and ignored, those in :data:`_REFUSED` are refused."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_completion_tokens: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(None, ge=1, description="deprecated alias of max_completion_tokens")
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, description="only 1")
    stop: str | list[str] | None = Field(None, description="up to 4 strings; the text ends before the first")
    at: float | None = Field(None, ge=0, description="streamvqa: answer as of this stream time (s)")


def request_schema() -> dict[str, Any]:
    """:class:`ChatCompletionRequest`'s JSON schema with its ``$defs`` inlined (the OpenAPI
    document has no ``components`` entry for them)."""
    schema = ChatCompletionRequest.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            return inline(defs[ref.rsplit("/", 1)[-1]]) if ref else {k: inline(v) for k, v in node.items()}
        return [inline(v) for v in node] if isinstance(node, list) else node

    return inline(schema)


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """Every non-2xx response of the OpenAI-compatible endpoints."""

    error: OpenAIErrorDetail


class BadParam(Exception):
    """A request the chat endpoint refuses (400 ``invalid_request``) naming the parameter."""

    def __init__(self, param: str | None, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


def error_type(status: int) -> str:
    return "server_error" if status >= 500 else _TYPES.get(status, "invalid_request_error")


def openai_error(message: str, status: int, code: str | None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def api_error_response(e: ApiError, redact: Callable[[str], str]) -> JSONResponse:
    """An :class:`ApiError` in OpenAI's shape: documented code and status (``invalid_request``
    is 400, as OpenAI answers a bad parameter), no internals (:func:`.errors.public_error`)."""
    body, status = public_error(e.code, e.message, e.status, redact)
    headers = {}
    if body.error.request_id is not None:
        headers["X-Request-ID"] = body.error.request_id
    retry = getattr(e, "retry_after_s", None)
    if retry is not None:
        headers["Retry-After"] = str(retry)
    if body.error.code == "invalid_request":
        status = 400
    return openai_error(body.error.message, status, body.error.code, headers=headers or None)


def model_not_found(model: str) -> JSONResponse:
    # the same answer for a missing stream and another key's: nothing about other keys leaks
    return openai_error(f"The model {model!r} does not exist or you do not have access to it.", 404,
                        "model_not_found", "model")


def _text_of(content: str | list[dict[str, Any]] | None, index: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise BadParam(f"messages[{index}].content",
                           "only text content is supported: the video is the stream named by `model`")
        parts.append(part["text"])
    return "\n".join(parts)


def parse_request(raw: bytes) -> ChatCompletionRequest:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError("malformed_json", "request body is not valid JSON") from None
    try:
        req = ChatCompletionRequest.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = err.get("loc", ())
        param = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc))
        raise BadParam(param or None, f"{param + ': ' if param else ''}{err.get('msg')}") from None
    extra = req.model_extra or {}
    for name in _REFUSED:
        v = extra.get(name)
        if v in (None, False, [], "none") or (name == "response_format" and isinstance(v, dict)
                                              and v.get("type") == "text"):
            continue
        raise BadParam(name, f"{name} is not supported")
    if req.n is not None and req.n != 1:
        raise BadParam("n", "only n=1 is supported")
    stops = stop_list(req)
    if len(stops) > 4 or any(not s for s in stops):
        raise BadParam("stop", "stop takes at most 4 non-empty strings")
    return req


def stop_list(req: ChatCompletionRequest) -> list[str]:
    return [req.stop] if isinstance(req.stop, str) else list(req.stop or [])


def question_of(req: ChatCompletionRequest, max_tokens_limit: int) -> QuestionRequest:
    """The last message (a user's) is the question; earlier turns are not sent to the model."""
    last = req.messages[-1]
    if last.role != "user":
        raise BadParam("messages", "the last message must be the user's question")
    question = _text_of(last.content, len(req.messages) - 1)
    if not question.strip():
        raise BadParam(f"messages[{len(req.messages) - 1}].content", "the question is blank")
    param, max_tokens = ("max_completion_tokens", req.max_completion_tokens)
    if max_tokens is None:
        param, max_tokens = ("max_tokens", req.max_tokens)
    if max_tokens is not None and max_tokens > max_tokens_limit:
        raise BadParam(param, f"{param} {max_tokens} exceeds the limit {max_tokens_limit}")
    return QuestionRequest(question=question, max_tokens=max_tokens, temperature=req.temperature,
                           top_p=req.top_p, at=req.at)


# -- stop strings ------------------------------------------------------------------------------------


class StopCut:
    """Cuts streamed text before the first stop string. Holds back the last ``len(stop) - 1``
    characters, so no text that a later token turns into a stop string is ever sent."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.buf = ""
        self.hit = False

    def feed(self, text: str) -> str:
        if self.hit:
            return ""
        self.buf += text
        found = [i for i in (self.buf.find(s) for s in self.stops) if i >= 0]
        if found:
            out, self.buf, self.hit = self.buf[: min(found)], "", True
            return out
        safe = len(self.buf) - self.hold
        if safe <= 0:
            return ""
        out, self.buf = self.buf[:safe], self.buf[safe:]
        return out

    def flush(self) -> str:
        out, self.buf = ("" if self.hit else self.buf), ""
        return out


class Trim:
    """Streamed tokens as the final answer text reads (the engine strips it): leading whitespace
    dropped, trailing whitespace held until more text follows."""

    def __init__(self) -> None:
        self.started = False
        self.held = ""

    def feed(self, text: str) -> str:
        if not self.started:
            text = text.lstrip()
            self.started = bool(text)
        body = (self.held + text).rstrip()
        self.held = (self.held + text)[len(body):]
        return body


# -- responses -------------------------------------------------------------------------------------


class Chat:
    """One completion's identity and the pieces every chunk / the completion share."""

    def __init__(self, req: ChatCompletionRequest, entry: StreamEntry, count_prompt: Callable[[], int]) -> None:
        self.req = req
        self.entry = entry
        self.id = "chatcmpl-" + uuid.uuid4().hex
        self.created = int(time.time())
        self.count_prompt = count_prompt  # called once answered: the question passed the length checks

    def usage(self, answer: Any) -> dict[str, int]:
        prompt, done = self.count_prompt(), len(answer.token_ids or [])
        return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}

    def extras(self, answer: Any) -> dict[str, Any]:
        """streamvqa's additions: the evidence spans (stream time) and timings."""
        resp = to_response(answer, self.entry, self.req.at)
        return {"evidence": [e.model_dump() for e in resp.evidence], "timings": resp.timings.model_dump()}

    def completion(self, answer: Any, text: str, finish: str) -> dict[str, Any]:
        return {
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.req.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                         "logprobs": None, "finish_reason": finish}],
            "usage": self.usage(answer),
            **self.extras(answer),
        }

    def chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        body = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.req.model, "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}
        return sse(body)


def sse(body: Any) -> bytes:
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n".encode()


def model_object(entry: StreamEntry) -> dict[str, Any]:
    return {"id": MODEL_PREFIX + entry.id, "object": "model", "created": int(entry.created_at),
            "owned_by": entry.owner or "streamvqa"}


# -- endpoints -------------------------------------------------------------------------------------

_END = object()
ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": OpenAIError} for s in (400, 401, 404, 409, 413, 429, 500, 503)
}


def install_routes(app: FastAPI, state: Any, redact: Callable[[str], str]) -> None:
    """Add the OpenAI-compatible routes over ``state`` (:class:`~.app.ServerState`) to ``app``
    itself (an included router is one opaque route to ``errors.allowed_methods``: no ``Allow``)."""

    def principal(request: Request) -> Principal:
        p = getattr(request.state, "principal", None)
        return p if isinstance(p, Principal) else ANONYMOUS

    def find(model: str, owner: str | None) -> StreamEntry | None:
        if not model.startswith(MODEL_PREFIX):
            return None
        try:
            return state.require().get(model[len(MODEL_PREFIX):], owner)
        except ApiError as e:
            if e.code == "unknown_stream":
                return None
            raise

    @app.get("/v1/models", responses=ERRORS, tags=["openai"])
    async def list_models(request: Request) -> Response:
        """The caller's streams, as OpenAI models named ``stream:<id>``."""
        try:
            entries = state.require().list(principal(request).owner)
        except ApiError as e:
            return api_error_response(e, redact)
        return JSONResponse({"object": "list", "data": [model_object(e) for e in entries]})

    @app.get("/v1/models/{model}", responses=ERRORS, tags=["openai"])
    async def get_model(request: Request, model: str) -> Response:
        try:
            entry = find(model, principal(request).owner)
        except ApiError as e:
            return api_error_response(e, redact)
        return model_not_found(model) if entry is None else JSONResponse(model_object(entry))

    @app.post(
        "/v1/chat/completions", responses=ERRORS, tags=["openai"],
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": request_schema()}}}},
    )
    async def chat_completions(request: Request) -> Response:
        """Answer the last user message about the stream ``model`` names (``stream: true``: SSE)."""
        entry: StreamEntry | None = None
        try:
            req = parse_request(await request.body())
            who = principal(request)
            entry = find(req.model, who.owner)
            if entry is None:
                return model_not_found(req.model)
            question = question_of(req, state.settings.max_tokens)
            state.take_question(who)
            chat = Chat(req, entry, lambda: state.answers.count_tokens(question.question))
            events = state.answers.events(entry, question)
            if not req.stream:
                final = None
                async for ev in events:
                    if is_answer(ev):
                        final = ev
                if final is None:
                    raise ApiError("internal_error", "the engine finished without an answer")
                text, finish = final.text, final.finish_reason or "stop"
                cut = StopCut(stop_list(req))
                if req.stop:
                    text = cut.feed(text) + cut.flush()
                    finish = "stop" if cut.hit else finish
                return JSONResponse(chat.completion(final, text, finish))
            return await stream_response(chat, entry, events)
        except BadParam as e:
            return openai_error(redact(e.message), 400, "invalid_request", e.param)
        except ApiError as e:
            return api_error_response(failed_stream_error(entry, e) if entry is not None else e, redact)

    async def stream_response(chat: Chat, entry: StreamEntry, events: AsyncIterator[Any]) -> Response:
        """SSE. A pump reads the engine into a queue (at most ``max_tokens`` events), so a slow
        reader never holds the model's fair turn; errors before the first token are plain HTTP
        errors, later ones an ``error`` event (the openai client raises it)."""
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for ev in events:
                    queue.put_nowait(ev)
                queue.put_nowait(_END)
            except ApiError as e:
                queue.put_nowait(failed_stream_error(entry, e))
            except Exception:
                log.exception("chat completion stream failed")
                queue.put_nowait(ApiError("internal_error", "the answer stream failed"))

        task = asyncio.create_task(pump())
        first = await queue.get()
        if isinstance(first, ApiError):
            return api_error_response(first, redact)

        async def body() -> AsyncIterator[bytes]:
            cut, trim = StopCut(stop_list(chat.req)), Trim()
            ev, final = first, None
            try:
                yield chat.chunk({"role": "assistant", "content": ""})
                while True:
                    if isinstance(ev, ApiError):
                        err, status = public_error(ev.code, ev.message, ev.status, redact)
                        yield sse({"error": {"message": err.error.message, "type": error_type(status),
                                             "param": None, "code": err.error.code}})
                        return
                    if ev is _END:
                        if final is None:
                            ev = ApiError("internal_error", "the engine finished without an answer")
                            continue
                        break
                    if is_answer(ev):
                        final = ev
                    else:
                        text = cut.feed(trim.feed(ev.text))
                        if text:
                            yield chat.chunk({"content": text})
                    ev = await queue.get()
                rest = cut.flush()
                if rest:
                    yield chat.chunk({"content": rest})
                finish = "stop" if cut.hit else (final.finish_reason or "stop")
                yield chat.chunk({}, finish, **chat.extras(final))
                opts = chat.req.stream_options
                if opts is not None and opts.include_usage:
                    yield sse({"id": chat.id, "object": "chat.completion.chunk", "created": chat.created,
                               "model": chat.req.model, "system_fingerprint": None, "choices": [],
                               "usage": chat.usage(final)})
                yield b"data: [DONE]\n\n"
            finally:
                if not task.done():  # the client went away: stop asking the engine for more
                    task.cancel()

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# -- errors raised outside the routes (auth, body limit, 405) ------------------------------------


class OpenAIErrorShape:
    """Rewrites ``{"error": {"code", "message"}}`` bodies that layers outside the routes send
    (401 from the key check, 413 from the body limit, 404/405 from routing) on the OpenAI paths
    into OpenAI's shape, so the openai client reads them like its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not any(path == p or path.startswith(p + "/") for p in PATHS):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def wrapped(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message
                return
            if start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = reshape(b"".join(chunks), start["status"])
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, wrapped)


def reshape(body: bytes, status: int) -> bytes:
    """A streamvqa error body as an OpenAI one (already-OpenAI or non-JSON bodies unchanged)."""
    try:
        err = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return body
    if not isinstance(err, dict) or "type" in err or "code" not in err:
        return body
    out = {"message": err.get("message", ""), "type": error_type(status), "param": None, "code": err["code"]}
    return json.dumps({"error": out}).encode()
