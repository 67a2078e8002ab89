"""Every error as ``{"error": {"code", "message"}}`` with a documented code and no internals:
handlers, ``OPTIONS``/``Allow``, media-root redaction and the body-size middleware."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamvqa.proto import ERROR_STATUS, ApiError, ErrorBody

log = logging.getLogger(__name__)

class _TooLarge(ApiError):
    """A chunked body went over the limit while the app was reading it."""


#: codes of the HTTP errors Starlette/FastAPI raise themselves. 400 comes only from FastAPI's
#: body parser (not UTF-8, nested too deeply for ``json.loads``): the body is not usable JSON.
_HTTP_CODES = {400: "malformed_json", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
               413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_request",
               429: "rate_limited", 503: "not_ready"}
_HTTP_MESSAGES = {400: "request body is not valid JSON (UTF-8, not nested too deeply)"}
#: an absolute filesystem path (not the path of a URL: no "/", ":" or name character before it)
_ABS_PATH = re.compile(r"(?<![\w:/.~-])/(?:[\w.@+-]+/)*[\w.@+-]+")
#: the order methods are listed in ``Allow``
_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class Redactor:
    """Rewrites absolute paths under the media root as paths relative to it (clients never see
    where the server keeps its files)."""

    def __init__(self, media_root: str | Path | None) -> None:
        roots: set[str] = set()
        if media_root:
            for root in (str(media_root), str(Path(media_root).resolve())):
                roots.add(root.rstrip("/"))
        roots.discard("")  # a root of "/" would make every absolute path "relative"
        alternatives = "|".join(re.escape(r) for r in sorted(roots, key=len, reverse=True))
        # the root itself, as a whole path component: followed by "/" or by no further name character
        self.pattern = re.compile(rf"(?:file://)?(?:{alternatives})(?:/|(?![\w.-]))") if roots else None

    def __call__(self, text: str) -> str:
        if self.pattern is None:
            return text
        return self.pattern.sub(lambda m: "" if m.group(0).endswith("/") else ".", text)


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


def public_error(code: str, message: str, status: int, redact: Callable[[str], str] = str,
                 ) -> tuple[ErrorBody, int]:
    """What a client may see of an error: a documented code (anything else, and every
    ``internal_error``, becomes ``internal_error`` with a generic message and a request id; the
    detail goes to the log under that id) and a message without media-root paths (server-side
    errors: without any absolute path, e.g. a worker's socket)."""
    if code not in ERROR_STATUS or code == "internal_error":
        rid = new_request_id()
        log.error("internal_error request_id=%s: %s: %s", rid, code, message)
        return ErrorBody.of("internal_error", "internal server error", rid), 500
    message = redact(message)
    if status >= 500:
        message = _ABS_PATH.sub("<path>", message)
    return ErrorBody.of(code, message), status


def error_response(code: str, message: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ErrorBody.of(code, message).model_dump(), status_code=status, headers=headers)


def body_response(body: ErrorBody, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    rid = body.error.request_id
    if rid is not None:
        headers = {**(headers or {}), "X-Request-ID": rid}
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def validation_message(errors: list[dict]) -> str:
    parts = []
    for err in errors[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts)


async def _body_not_json(request: Request, errors: list[dict]) -> bool:
    """A body sent without a JSON content type that is not JSON either (FastAPI reports it as a
    type error on ``body``)."""
    if not any(tuple(err.get("loc", ())) == ("body",) for err in errors):
        return False
    try:
        raw = await request.body()
        if raw:
            json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return True
    except Exception:
        return False
    return False


def allowed_methods(request: Request) -> str:
    """``Allow`` for the request's path: every method of every route whose path matches, and
    OPTIONS (not a route that only answers 405, like WHIP's PATCH)."""
    scope = {**request.scope, "type": "http"}
    methods = {"OPTIONS"}
    for route in request.app.router.routes:
        route_methods = getattr(route, "methods", None)
        if getattr(route, "status_code", None) == 405:
            continue
        if route_methods and route.matches(scope)[0] is not Match.NONE:
            methods |= set(route_methods)
    return ", ".join(sorted(methods, key=lambda m: (_METHOD_ORDER + (m,)).index(m)))


def install_error_handlers(app: FastAPI, redact: Callable[[str], str] = str) -> None:
    """Render ApiError, validation errors, HTTP errors and crashes as :class:`ErrorBody`;
    answer ``OPTIONS`` with ``204`` and the path's full ``Allow``."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        body, status = public_error(e.code, e.message, e.status, redact)
        headers = {"WWW-Authenticate": 'Bearer realm="streamvqa"'} if status == 401 else None
        if status == 405:  # a route that refuses its own method (WHIP's PATCH)
            headers = {"Allow": allowed_methods(request)}
        retry = getattr(e, "retry_after_s", None)  # limits.RetryLater: a limit that frees up by itself
        if retry is not None:
            headers = {**(headers or {}), "Retry-After": str(retry)}
        return body_response(body, status, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError) -> JSONResponse:
        errors = list(e.errors())
        if any(err.get("type") == "json_invalid" for err in errors) or await _body_not_json(request, errors):
            return error_response("malformed_json", "request body is not valid JSON", 400)
        for err in errors:  # ingest's scheme check surfaces as its own pydantic error type
            if err.get("type") == "unsupported_scheme":
                return error_response("unsupported_scheme", redact(str(err.get("msg"))), 400)
        return error_response("invalid_request", redact(validation_message(errors)), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> Response:
        headers = dict(getattr(e, "headers", None) or {})
        if e.status_code == 405:
            headers["Allow"] = allowed_methods(request)
            if request.method == "OPTIONS":  # the path exists: say what it supports
                return Response(status_code=204, headers=headers)
        code, status = _HTTP_CODES.get(e.status_code), e.status_code
        if code is None:  # nothing in this app raises other statuses; keep the documented pairs
            code = "internal_error" if status >= 500 else "invalid_request"
            status = ERROR_STATUS[code]
        body, status = public_error(code, _HTTP_MESSAGES.get(status, str(e.detail)), status, redact)
        return body_response(body, status, headers or None)

    @app.exception_handler(Exception)
    async def _crash(request: Request, e: Exception) -> JSONResponse:
        rid = new_request_id()
        # details in the log only, never to the client
        log.exception("internal_error request_id=%s: unhandled error in %s %s", rid, request.method,
                      request.url.path)
        return body_response(ErrorBody.of("internal_error", "internal server error", rid), 500)


class BodyLimitMiddleware:
    """Reject HTTP request bodies over ``max_bytes`` with 413 ``payload_too_large``.

    Checks ``Content-Length`` up front and counts chunked bodies as they arrive.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send: Send) -> None:
        body = json.dumps(
            ErrorBody.of("payload_too_large", f"request body over {self.max_bytes} bytes").model_dump()
        ).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self._reject(send)
                    return
        seen = 0
        exceeded = False
        replaced = False

        async def limited_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    raise _TooLarge("payload_too_large", f"request body over {self.max_bytes} bytes")
            return message

        async def guarded_send(message: Message) -> None:
            # whatever the app made of the aborted read (FastAPI turns it into a 400), answer 413
            nonlocal replaced
            if exceeded:
                if not replaced:
                    replaced = True
                    await self._reject(send)
                return
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            if not replaced:
                await self._reject(send)
