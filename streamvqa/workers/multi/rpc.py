"""Request/reply (and request/event-stream) over ZeroMQ with the typed messages of proto/ipc.py.

Server: one ROUTER socket polled by one thread; handlers run on a small thread pool (a store
write waiting on Redis never stalls a ping); replies come back to the polling thread through
per-thread inproc PUSH sockets (ZeroMQ sockets are not thread-safe).

Client: a pool of DEALER sockets, one checked out per call. IMMEDIATE is set so a request is
never queued for a peer that is not connected (a restarted worker must not run requests its
dead predecessor was sent), and a socket whose call failed is closed, never reused, so a late
reply cannot be mistaken for the next call's. Calls wait in short slices and give up when the
supervisor declares the peer dead (`reset`), so a question in flight gets an error, not a hang.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import zmq
from pydantic import BaseModel

from streamvqa.proto import ipc

log = logging.getLogger(__name__)

SLICE_MS = 50
CONNECT_WAIT_S = 2.0
MAX_MSG_BYTES = ipc.MAX_ATTACHMENT_BYTES + (1 << 20)

# handler(body, attachments, emit) -> (reply body, attachments); emit(event body) streams events
Emit = Callable[[BaseModel], None]
Handler = Callable[[Any, list[bytes], Emit], "tuple[BaseModel, list] | BaseModel"]


# errors after which a socket may still hold an unread reply: it is not reused
UNSYNCED = ("timeout", "worker_unavailable", "invalid_message")

class WorkerUnavailable(ipc.IpcError):
    def __init__(self, message: str) -> None:
        super().__init__("worker_unavailable", message)


class RpcServer:
    """Serves `handlers` on `endpoint` until `stop()`; `serve_forever` blocks the caller."""

    def __init__(self, endpoint: str, handlers: dict[str, Handler], *, threads: int = 4,
                 ctx: zmq.Context | None = None) -> None:
        self.endpoint = endpoint
        self.handlers = handlers
        self.ctx = ctx or zmq.Context.instance()
        self._router = self.ctx.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.LINGER, 0)
        self._router.setsockopt(zmq.MAXMSGSIZE, MAX_MSG_BYTES)
        self._router.setsockopt(zmq.ROUTER_MANDATORY, 0)  # a gone client: drop its replies
        self._router.bind(endpoint)
        self._inproc = f"inproc://rpc-replies-{id(self)}"
        self._pull = self.ctx.socket(zmq.PULL)
        self._pull.bind(self._inproc)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="rpc")
        self._local = threading.local()
        self._pushes: list[zmq.Socket] = []
        self._push_lock = threading.Lock()
        self._stop = threading.Event()

    def _push(self) -> zmq.Socket:
        s = getattr(self._local, "push", None)
        if s is None:
            s = self.ctx.socket(zmq.PUSH)
            s.setsockopt(zmq.LINGER, 1000)
            s.connect(self._inproc)
            self._local.push = s
            with self._push_lock:
                self._pushes.append(s)
        return s

    def _send(self, ident: bytes, reply: ipc.Reply, atts: list = ()) -> None:
        self._push().send_multipart([ident, *ipc.pack(reply, list(atts))], copy=False)

    def _run(self, ident: bytes, frames: list[bytes]) -> None:
        rid = "-"
        try:
            req, body, atts = ipc.unpack_request(frames)
            rid = req.id
            handler = self.handlers.get(req.op)
            if handler is None:
                raise ipc.IpcError("unknown_op", f"this worker does not serve {req.op!r}")

            def emit(event: BaseModel, event_atts: list = ()) -> None:
                self._send(ident, ipc.Reply(id=rid, kind="event", body=ipc.dumps(event)), event_atts)

            out = handler(body, atts, emit)
            reply, out_atts = out if isinstance(out, tuple) else (out, [])
            self._send(ident, ipc.Reply(id=rid, kind="ok", body=ipc.dumps(reply)), out_atts)
        except ipc.IpcError as e:
            self._send(ident, ipc.error_reply(rid, e.code, e.message))
        except Exception as e:  # a handler bug answers as an error; the server keeps serving
            code = getattr(e, "code", None)
            if isinstance(code, str):  # EngineError / StoreError-like with a stable code
                self._send(ident, ipc.error_reply(rid, code, getattr(e, "message", None) or str(e)))
            else:
                log.exception("rpc handler failed")
                self._send(ident, ipc.error_reply(rid, _code_of(e), f"{type(e).__name__}: {e}"))

    def serve_forever(self) -> None:
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._pull, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(200))
                if self._router in events:
                    for _ in range(64):
                        try:
                            ident, *frames = self._router.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._pool.submit(self._run, ident, frames)
                if self._pull in events:
                    for _ in range(256):
                        try:
                            msg = self._pull.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        self._router.send_multipart(msg, copy=False)
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._router.close(0)
            self._pull.close(0)

    def stop(self) -> None:
        self._stop.set()


def _code_of(e: Exception) -> str:
    name = type(e).__name__
    if name in ("BlockNotFoundError", "LeaseExpiredError"):
        return "block_not_found"
    if name == "CorruptBlockError":
        return "corrupt_block"
    if name == "StoreFullError":
        return "store_full"
    if name == "StoreError":
        return "store_error"
    return "internal"


class RpcClient:
    """Calls one peer. Thread-safe: every call checks a socket out of a small pool."""

    _ids = itertools.count()

    def __init__(self, endpoint: str, name: str = "peer", ctx: zmq.Context | None = None) -> None:
        self.endpoint = endpoint
        self.name = name
        self.ctx = ctx or zmq.Context.instance()
        self._pool: list[zmq.Socket] = []
        self._monitors: dict[zmq.Socket, zmq.Socket] = {}
        self._lock = threading.Lock()
        self._epoch = 0
        self._prefix = f"{os.getpid()}-{id(self) & 0xFFFF:x}"

    # -- sockets ---------------------------------------------------------------------------
    def _checkout(self) -> tuple[zmq.Socket, int]:
        with self._lock:
            epoch = self._epoch
            while self._pool:
                s = self._pool.pop()
                if not self._disconnected(s):
                    return s, epoch
                self._discard(s)  # its peer went away while it sat in the pool
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.IMMEDIATE, 1)
        s.setsockopt(zmq.MAXMSGSIZE, MAX_MSG_BYTES)
        # the monitor tells a caller at once that the peer's connection dropped (it died)
        self._monitors[s] = s.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        s.connect(self.endpoint)
        return s, epoch

    def _disconnected(self, s: zmq.Socket) -> bool:
        mon = self._monitors.get(s)
        if mon is None:
            return False
        seen = False
        while mon.poll(0):
            mon.recv_multipart()
            seen = True
        return seen

    def _discard(self, s: zmq.Socket) -> None:
        mon = self._monitors.pop(s, None)
        if mon is not None:
            try:
                s.disable_monitor()
            except zmq.ZMQError:
                pass
            mon.close(0)
        s.close(0)

    def _checkin(self, s: zmq.Socket, epoch: int) -> None:
        with self._lock:
            if epoch == self._epoch and len(self._pool) < 16:
                self._pool.append(s)
                return
            self._discard(s)

    def reset(self) -> None:
        """The peer died (or restarted): calls in flight fail now, pooled sockets are dropped."""
        with self._lock:
            self._epoch += 1
            pool, self._pool = self._pool, []
            for s in pool:
                self._discard(s)

    def close(self) -> None:
        self.reset()

    # -- calls -----------------------------------------------------------------------------
    def _request(self, op: str, body: BaseModel, atts: list,
                 connect_wait: float = CONNECT_WAIT_S) -> tuple[zmq.Socket, int, str]:
        s, epoch = self._checkout()
        rid = f"{self._prefix}-{next(self._ids)}"
        msg = ipc.pack(ipc.Request(id=rid, op=op, body=ipc.dumps(body)), list(atts))
        # IMMEDIATE: writable only once a peer is connected (a fresh socket needs a moment)
        if not s.poll(int(connect_wait * 1000), zmq.POLLOUT):
            self._drop(s)
            raise WorkerUnavailable(f"{self.name} is not reachable at {self.endpoint}")
        try:
            s.send_multipart(msg, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self._drop(s)
            raise WorkerUnavailable(f"{self.name} is not reachable at {self.endpoint}") from None
        return s, epoch, rid

    def _drop(self, s: zmq.Socket) -> None:
        with self._lock:
            self._discard(s)

    def _next(self, s: zmq.Socket, epoch: int, rid: str, op: str, deadline: float) -> tuple[ipc.Reply, Any, list]:
        while True:
            if epoch != self._epoch:
                raise WorkerUnavailable(f"{self.name} died while handling {op}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise ipc.IpcError("timeout", f"{self.name} did not answer {op} in time")
            if self._disconnected(s):
                raise WorkerUnavailable(f"{self.name} went away while handling {op}")
            if s.poll(min(SLICE_MS, max(1, int(left * 1000))), zmq.POLLIN):
                frames = s.recv_multipart()
                rep, body, atts = ipc.unpack_reply(op, frames)
                if rep.id != rid:  # cannot happen on a fresh socket; ignore defensively
                    continue
                return rep, body, atts

    def call(self, op: str, body: BaseModel | None = None, atts: list = (), *,
             timeout: float = 30.0, connect_wait: float = CONNECT_WAIT_S) -> tuple[Any, list[bytes]]:
        """One request, one reply body (validated) and its attachments. Raises IpcError.
        `connect_wait`: how long a fresh connection may take before the peer counts as down."""
        s, epoch, rid = self._request(op, body or ipc.Empty(), atts, min(connect_wait, timeout))
        ok = False
        try:
            _, reply, ratts = self._next(s, epoch, rid, op, time.monotonic() + timeout)
            ok = True
            return reply, ratts
        except ipc.IpcError as e:
            ok = e.code not in UNSYNCED
            raise
        finally:
            self._release(s, epoch, ok)

    def stream(self, op: str, body: BaseModel, *, idle_timeout: float = 120.0) -> Iterator[tuple[str, Any]]:
        """A streaming call: yields ("event", body) ... then ("ok", final body). The socket is
        owned by the generator until it ends (it may be advanced from different threads, never
        from two at once)."""
        s, epoch, rid = self._request(op, body, [])
        ok = False
        try:
            while True:
                rep, reply, _ = self._next(s, epoch, rid, op, time.monotonic() + idle_timeout)
                yield rep.kind, reply
                if rep.kind == "ok":
                    ok = True
                    return
        except ipc.IpcError as e:
            ok = e.code not in UNSYNCED
            raise
        finally:
            self._release(s, epoch, ok)

    def _release(self, s: zmq.Socket, epoch: int, ok: bool) -> None:
        """Back to the pool after a clean reply; dropped otherwise, so that a late reply (or an
        abandoned stream's events) never reaches the next call on that socket."""
        if ok:
            self._checkin(s, epoch)
        else:
            self._drop(s)

    def ping(self, timeout: float = 1.0) -> ipc.Pong | None:
        try:
            reply, _ = self.call("ping", ipc.Ping(), timeout=timeout, connect_wait=timeout)
            return reply
        except ipc.IpcError:
            return None
