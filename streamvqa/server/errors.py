"""Every error as ``{"error": {"code", "message"}}``: handlers and the body-size middleware."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamvqa.proto import ApiError, ErrorBody

log = logging.getLogger(__name__)

class _TooLarge(ApiError):
    """A chunked body went over the limit while the app was reading it."""


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type"}


def error_response(code: str, message: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ErrorBody.of(code, message).model_dump(), status_code=status, headers=headers)


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
    except ValueError:
        return True
    except Exception:
        return False
    return False


def install_error_handlers(app: FastAPI) -> None:
    """Render ApiError, validation errors, HTTP errors and crashes as :class:`ErrorBody`."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Bearer realm="streamvqa"'} if e.status == 401 else None
        retry = getattr(e, "retry_after_s", None)  # limits.RetryLater: a limit that frees up by itself
        if retry is not None:
            headers = {**(headers or {}), "Retry-After": str(retry)}
        return error_response(e.code, e.message, e.status, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError) -> JSONResponse:
        errors = list(e.errors())
        if any(err.get("type") == "json_invalid" for err in errors) or await _body_not_json(request, errors):
            return error_response("malformed_json", "request body is not valid JSON", 400)
        for err in errors:  # ingest's scheme check surfaces as its own pydantic error type
            if err.get("type") == "unsupported_scheme":
                return error_response("unsupported_scheme", str(err.get("msg")), 400)
        return error_response("invalid_request", validation_message(errors), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(e.status_code, "internal" if e.status_code >= 500 else "invalid_request")
        return error_response(code, str(e.detail), e.status_code, getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def _crash(_: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error")  # details in the log only, never to the client
        return error_response("internal", "internal server error", 500)


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
