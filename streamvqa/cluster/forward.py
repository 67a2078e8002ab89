"""Any replica serves any stream: an ASGI middleware (inside the API-key check) that proxies a
request for a stream another replica owns to that replica, WebSockets included.

Proxying rather than redirecting: clients (and load balancers) never see replica addresses,
WebSocket clients need no redirect support, and the owner checks the key again exactly as for a
direct call (the ``Authorization`` header, ``bearer.`` subprotocol and ``?token=`` travel
unchanged). A stream of another key is never forwarded: the local server answers
``unknown_stream`` (404), as for an id that does not exist. Requests carry
``X-Streamvqa-Forwarded`` so they are never forwarded twice; every response says which replica
served it (``X-Streamvqa-Replica``).

Also here: placement of ``POST /v1/streams`` (`placement.choose`), ``GET /v1/streams`` over every
replica, and ``/ready`` that is 503 while this replica holds no lease in the directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from typing import Any

import httpx
import redis
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from streamvqa.proto import ErrorBody

from .node import Node
from .placement import choose

log = logging.getLogger(__name__)

FORWARDED = b"x-streamvqa-forwarded"
REPLICA = b"x-streamvqa-replica"
STREAM_PATH = re.compile(r"^/v1/(?:streams|whip)/([A-Za-z0-9_.-]{1,128})(?:/.*)?$")
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
              b"trailers", b"transfer-encoding", b"upgrade", b"host", b"content-length"}
WS_PASS = {b"authorization", b"origin", b"user-agent"}


def _json(status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None) -> list[Message]:
    raw = json.dumps(body).encode()
    hs = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()), *(headers or [])]
    return [{"type": "http.response.start", "status": status, "headers": hs},
            {"type": "http.response.body", "body": raw}]


def moving(stream_id: str) -> list[Message]:
    body = ErrorBody.of("stream_moving", f"stream {stream_id!r} is moving to another replica; retry shortly")
    return _json(503, body.model_dump(), [(b"retry-after", b"2")])


class ClusterMiddleware:
    def __init__(self, app: ASGIApp, node: Node) -> None:
        self.app = app
        self.node = node
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(connect=3.0, read=900.0, write=60.0, pool=30.0))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        me = self.node.me.encode()
        if kind == "http":
            inner_send = send

            async def send(message: Message) -> None:  # noqa: F811 - every answer names its replica
                if message["type"] == "http.response.start" and not any(
                        k == REPLICA for k, _ in message.get("headers", [])):
                    message = {**message, "headers": [*message.get("headers", []), (REPLICA, me)]}
                await inner_send(message)
        headers = scope.get("headers", [])
        if any(k == FORWARDED for k, _ in headers):
            await self.app(scope, receive, send)
            return
        path, method = scope.get("path", ""), scope.get("method", "GET")
        try:
            if kind == "http" and path == "/ready" and not self.node.member:
                await self._not_member(scope, send)
                return
            if kind == "http" and path == "/v1/streams" and self.node.state.streams is not None:
                if method == "POST":
                    await self._place(scope, receive, send)
                    return
                if method == "GET":
                    await self._list_all(scope, send)
                    return
            m = STREAM_PATH.match(path)
            if m is not None and await self._remote(scope, m.group(1), receive, send):
                return
        except redis.RedisError as e:  # no directory: what this replica holds is still served
            log.warning("cluster: directory unreachable while routing %s: %s", path, e)
            m = STREAM_PATH.match(path)
            reg = self.node.state.streams
            if m is not None and reg is not None and m.group(1) not in {e.id for e in reg.list()}:
                # it may live on another replica: "retry", never a 404 that says it does not exist
                if kind == "websocket":
                    await self._ws_refuse(receive, send, m.group(1))
                else:
                    for msg in moving(m.group(1)):
                        await send(msg)
                return
        await self.app(scope, receive, send)

    # -- helpers ---------------------------------------------------------------------------------
    def _principal_owner(self, scope: Scope) -> tuple[bool, str | None]:
        """(known caller, their key name) — WebSockets are checked here as their endpoint would."""
        state = self.node.state
        if not state.auth.enabled:
            return True, None
        if scope["type"] == "websocket":
            from streamvqa.server.auth import ws_token

            p = state.auth.check(ws_token(scope)[0])
        else:
            p = scope.get("state", {}).get("principal")
        owner = getattr(p, "owner", None)
        return owner is not None, owner

    async def _not_member(self, scope: Scope, send: Send) -> None:
        known, _ = self._principal_owner(scope)
        body: dict[str, Any] = {"ready": False}
        if known:
            body |= {"degraded": [], "checks": {"cluster": {"ok": False, "replica": self.node.me}},
                     "error": {"code": "not_ready", "message": "this replica holds no lease in the stream directory"}}
        for msg in _json(503, body):
            await send(msg)

    async def _remote(self, scope: Scope, stream_id: str, receive: Receive, send: Send) -> bool:
        """Forward if another replica owns the stream and the caller's key owns it; False: serve here."""
        node = self.node
        reg = node.state.streams
        if reg is None or stream_id in {e.id for e in reg.list()}:
            return False
        rec = await node.dir.get(stream_id)
        if rec is None or rec.replica == node.me:
            return False
        known, owner = self._principal_owner(scope)
        if not known or (node.state.auth.enabled and rec.owner != owner):
            return False  # served here: unauthorized / unknown_stream, as for any id
        url = await self._url_of(rec.replica)
        if url is None:
            if scope["type"] == "websocket":
                await self._ws_refuse(receive, send, stream_id)
            else:
                for msg in moving(stream_id):
                    await send(msg)
            return True
        if scope["type"] == "websocket":
            await self._ws_proxy(scope, receive, send, url, stream_id)
        else:
            await self._http_proxy(scope, receive, send, url, stream_id)
        return True

    async def _url_of(self, replica: str) -> str | None:
        """The URL of a live replica (None: no lease, its streams are being adopted)."""
        if not await self.node.dir.alive(replica):
            return None
        raw = await self.node.dir.r.hget(f"{self.node.dir.p}:replica:{replica}", "url")
        return raw.decode() if raw else None

    async def _body(self, receive: Receive) -> bytes | None:
        """The request body; None past ``max_body_bytes`` (a forwarded body is held in memory, so
        the limit applies here as it would on the owner)."""
        limit = self.node.state.settings.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                break
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not msg.get("more_body"):
                break
        return b"".join(chunks)

    async def _too_large(self, send: Send) -> None:
        body = ErrorBody.of("payload_too_large", f"request body over {self.node.state.settings.max_body_bytes} bytes")
        for msg in _json(413, body.model_dump()):
            await send(msg)

    # -- HTTP ------------------------------------------------------------------------------------
    async def _http_proxy(self, scope: Scope, receive: Receive, send: Send, base: str, stream_id: str,
                          body: bytes | None = None) -> bool:
        """Proxy one request to ``base``; False (nothing sent) when the replica cannot be reached."""
        if body is None:
            body = await self._body(receive)
            if body is None:
                await self._too_large(send)
                return True
        headers = [(k, v) for k, v in scope.get("headers", []) if k not in HOP_BY_HOP]
        headers.append((FORWARDED, self.node.me.encode()))
        target = base + scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        req = self.http.build_request(scope["method"], target, headers=headers, content=body)
        try:
            resp = await self.http.send(req, stream=True)
        except httpx.TransportError as e:
            log.warning("cluster: replica at %s unreachable for %s: %s", base, stream_id, e)
            for msg in moving(stream_id):
                await send(msg)
            return True
        self.node.metrics.forwarded.labels(kind="http").inc()
        try:
            out = [(k.lower(), v) for k, v in resp.headers.raw if k.lower() not in HOP_BY_HOP - {b"content-length"}]
            await send({"type": "http.response.start", "status": resp.status_code, "headers": out})
            async for chunk in resp.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await resp.aclose()
        return True

    async def _place(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /v1/streams``: on the replica with room; this one if it is the best or alone."""
        body = await self._body(receive)
        if body is None:
            await self._too_large(send)
            return
        try:
            target = await choose(self.node)
        except redis.RedisError:  # no directory: the receiver takes it
            target = None
        if target is not None and target.id != self.node.me:
            self.node.metrics.forwarded.labels(kind="placement").inc()
            await self._http_proxy(scope, receive, send, target.url, "new", body=body)
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _list_all(self, scope: Scope, send: Send) -> None:
        """``GET /v1/streams``: the caller's streams on every live replica (each filters by key)."""
        replicas = [r for r in await self.node.dir.replicas() if r.alive and r.url]
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", [])
                   if k in (b"authorization",)]
        headers.append((FORWARDED.decode(), self.node.me))
        qs = scope.get("query_string", b"").decode("latin-1")

        async def one(url: str) -> list[dict[str, Any]]:
            try:
                r = await self.http.get(url + "/v1/streams" + (f"?{qs}" if qs else ""), headers=headers,
                                        timeout=5.0)
            except httpx.TransportError:
                return []
            return list(r.json().get("streams", [])) if r.status_code == 200 else []

        results = await asyncio.gather(*(one(r.url) for r in replicas))
        seen: dict[str, dict[str, Any]] = {}
        for streams in results:
            for s in streams:
                seen.setdefault(s["id"], s)
        merged = sorted(seen.values(), key=lambda s: (s.get("created_at") or 0, s["id"]))
        for msg in _json(200, {"streams": merged}):
            await send(msg)

    # -- WebSocket -------------------------------------------------------------------------------
    async def _ws_refuse(self, receive: Receive, send: Send, stream_id: str) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        err = {"type": "error", "request_id": None, "error": ErrorBody.of(
            "stream_moving", f"stream {stream_id!r} is moving to another replica; retry shortly").model_dump()["error"]}
        await send({"type": "websocket.send", "text": json.dumps(err)})
        await send({"type": "websocket.close", "code": 1013, "reason": "stream_moving"})

    async def _ws_proxy(self, scope: Scope, receive: Receive, send: Send, base: str, stream_id: str) -> None:
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        url = "ws" + base.removeprefix("http") + scope["path"]
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", []) if k in WS_PASS]
        headers.append((FORWARDED.decode(), self.node.me))
        try:
            upstream = await ws_connect(url, additional_headers=headers, open_timeout=5,
                                        subprotocols=list(scope.get("subprotocols") or []) or None,
                                        max_size=None, ping_interval=None)
        except (OSError, InvalidHandshake, InvalidStatus, TimeoutError) as e:
            log.warning("cluster: WebSocket to %s for %s failed: %s", base, stream_id, e)
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1013, "reason": "stream_moving"})
            return
        self.node.metrics.forwarded.labels(kind="websocket").inc()
        await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})

        async def down() -> None:  # owner -> client
            try:
                async for msg in upstream:
                    key = "text" if isinstance(msg, str) else "bytes"
                    await send({"type": "websocket.send", key: msg})
            except ConnectionClosed:
                pass
            rcvd = upstream.close_code or 1000
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": rcvd, "reason": upstream.close_reason or ""})

        async def up() -> None:  # client -> owner
            while True:
                msg = await receive()
                if msg["type"] == "websocket.disconnect":
                    await upstream.close(msg.get("code", 1000))
                    return
                data = msg.get("text") if msg.get("text") is not None else msg.get("bytes")
                if data is not None:
                    await upstream.send(data)

        tasks = [asyncio.create_task(down()), asyncio.create_task(up())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            with contextlib.suppress(Exception):
                await upstream.close()

    async def aclose(self) -> None:
        await self.http.aclose()
