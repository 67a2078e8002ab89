"""CORS for browser clients (``cors_allow_origins``; none by default: no CORS headers at all).

The outermost middleware: a preflight (``OPTIONS`` with ``Access-Control-Request-Method``) from
an allowed origin is answered here, before the key check (browsers send no ``Authorization`` on a
preflight); other requests from an allowed origin get ``Access-Control-Allow-Origin`` and the
exposed headers. Keys are bearer tokens, never cookies, so credentials are not allowed.
Requests from other origins pass through untouched (the browser then refuses the answer).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ALLOW_METHODS = "GET, POST, DELETE, PATCH, OPTIONS"
#: readable by scripts: WHIP's ``Location``, the stream id, the error request id, back-off hints
EXPOSE_HEADERS = "Location, X-Stream-Id, X-Request-ID, Retry-After, WWW-Authenticate"


def parse_origins(value: Any) -> list[str]:
    """``cors_allow_origins`` from a list, a JSON list or a comma-separated string: each
    ``scheme://host[:port]`` (no path, lower case) or ``*``; ``ValueError`` otherwise."""
    if isinstance(value, str):
        text = value.strip()
        value = json.loads(text) if text.startswith("[") else [v for v in text.split(",") if v.strip()]
    if not isinstance(value, list | tuple):
        raise ValueError("a list of origins")
    out = []
    for raw in value:
        origin = str(raw).strip().lower()
        if origin != "*":
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or origin != f"{parts.scheme}://{parts.netloc}":
                raise ValueError(f"{raw!r} is not an origin (scheme://host[:port], no path) or *")
        out.append(origin)
    return out


class CorsMiddleware:
    def __init__(self, app: ASGIApp, allow_origins: list[str], allow_headers: list[str], max_age_s: int) -> None:
        self.app = app
        self.any = "*" in allow_origins
        self.origins = frozenset(allow_origins)
        self.allow_headers = ", ".join(allow_headers)
        self.max_age = str(max_age_s)

    def allowed(self, origin: str) -> bool:
        return self.any or origin.lower() in self.origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers", [])) if scope["type"] == "http" else {}
        origin = headers.get(b"origin", b"").decode("latin-1")
        if not origin or not self.allowed(origin):
            await self.app(scope, receive, send)
            return
        allow = [(b"access-control-allow-origin", b"*" if self.any else origin.encode("latin-1")),
                 (b"vary", b"Origin")]
        if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
            await send({"type": "http.response.start", "status": 204, "headers": [
                *allow,
                (b"access-control-allow-methods", ALLOW_METHODS.encode()),
                (b"access-control-allow-headers", self.allow_headers.encode("latin-1")),
                (b"access-control-max-age", self.max_age.encode()),
            ]})
            await send({"type": "http.response.body", "body": b""})
            return

        async def with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [
                    *message.get("headers", []), *allow,
                    (b"access-control-expose-headers", EXPOSE_HEADERS.encode()),
                ]}
            await send(message)

        await self.app(scope, receive, with_cors)
