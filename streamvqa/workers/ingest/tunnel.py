"""A local HTTP CONNECT tunnel that keeps TLS SNI for a DNS-pinned https source.

FFmpeg sends no TLS SNI to an IP literal, so handing it ``https://<pinned IP>/...`` breaks every
server that needs SNI (nearly every CDN), and FFmpeg has no option that sets SNI apart from the
host it connects to (``verifyhost`` only changes the name the certificate is checked against).
Instead FFmpeg gets the URL with its name intact plus ``http_proxy=`` this tunnel: it sends
``CONNECT name:port``, then TLS with SNI = name and ``Host`` = name, and the tunnel dials the
pinned address, never a resolved one.

One tunnel per opened source, on 127.0.0.1 and an ephemeral port, closed with the source. It
accepts only ``CONNECT <pinned name>:<port>`` (anything else: ``403`` and close) and only ever
dials the pinned address and port, so a local process that finds it reaches nothing but the one
address the URL policy already checked. Threads and buffers are bounded: one accept thread, at
most :data:`MAX_CONNECTIONS` relay threads, :data:`CHUNK` bytes in flight per direction.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: Concurrent tunnelled connections (FFmpeg uses one, plus one per seek while the old one closes).
MAX_CONNECTIONS = 4
#: Largest CONNECT request head read (FFmpeg's is about 100 bytes).
MAX_HEAD = 4096
#: Bytes relayed per read, per direction.
CHUNK = 64 * 1024

_OK = b"HTTP/1.1 200 Connection established\r\n\r\n"


def _refusal(status: str) -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()


@dataclass(frozen=True)
class TunnelPin:
    """What a tunnel serves: ``CONNECT host:port`` is dialled to ``address:port``."""

    host: str  # the URL's host name, lower case (urlsplit's ``hostname``)
    port: int
    address: str  # the pinned IP

    @property
    def authority(self) -> bytes:
        """The CONNECT target FFmpeg sends for this pin (``ff_url_join(host, port)``)."""
        return f"{self.host}:{self.port}".encode()


class ConnectTunnel:
    """A running tunnel; :meth:`close` (or ``with``) stops it and every connection through it."""

    def __init__(self, pin: TunnelPin, connect_timeout_s: float) -> None:
        self.pin = pin
        self.connect_timeout_s = connect_timeout_s
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=MAX_CONNECTIONS)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._lock = threading.Lock()
        self._closed = False
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._conns: set[socket.socket] = set()  # every open socket of every connection
        self._threads: set[threading.Thread] = set()
        self._acceptor = threading.Thread(target=self._accept_loop, name="sni-tunnel", daemon=True)
        self._acceptor.start()

    @property
    def proxy_url(self) -> str:
        """The value of FFmpeg's ``http_proxy`` option."""
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        """Stop accepting, cut every tunnelled connection, and wait for the threads (bounded)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conns, threads = list(self._conns), list(self._threads)
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        for s in conns:  # wakes the relays' select with EOF
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for t in [self._acceptor, *threads]:
            if t is not threading.current_thread():
                t.join(5.0)
        for s in (self._listener, self._wake_r, self._wake_w):
            s.close()

    def __enter__(self) -> ConnectTunnel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._listener, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while not self._closed:
                for key, _ in sel.select():
                    if key.fileobj is self._wake_r:
                        return
                    try:
                        client, _ = self._listener.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        return
                    self._admit(client)

    def _admit(self, client: socket.socket) -> None:
        client.setblocking(True)
        if not self._slots.acquire(blocking=False):
            self._refuse(client, "503 Service Unavailable")
            return
        thread = threading.Thread(target=self._serve, args=(client,), name="sni-tunnel-conn", daemon=True)
        with self._lock:
            if self._closed:
                self._slots.release()
                client.close()
                return
            self._conns.add(client)
            self._threads.add(thread)
            thread.start()  # under the lock: close() never joins a thread not yet started

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            rest = self._read_connect(client)
            if rest is None:
                return
            try:
                upstream = socket.create_connection((self.pin.address, self.pin.port), self.connect_timeout_s)
            except OSError as e:
                log.info("tunnel to %s:%d failed: %s", self.pin.address, self.pin.port, e)
                self._refuse(client, "502 Bad Gateway")
                return
            with self._lock:
                if self._closed:
                    return
                self._conns.add(upstream)
            # relaying waits as long as FFmpeg does (a paced reader may pause; FFmpeg's rw_timeout
            # bounds a stalled server): no socket timeouts from here on
            upstream.settimeout(None)
            client.settimeout(None)
            client.sendall(_OK)
            if rest:
                upstream.sendall(rest)
            self._relay(client, upstream)
        except OSError as e:  # a side went away mid-relay: the connection just ends
            log.debug("tunnel connection ended: %s", e)
        finally:
            with self._lock:
                self._conns.discard(client)
                if upstream is not None:
                    self._conns.discard(upstream)
                self._threads.discard(threading.current_thread())
            for s in (client, upstream):
                if s is not None:
                    s.close()
            self._slots.release()

    def _read_connect(self, client: socket.socket) -> bytes | None:
        """Read and check the CONNECT request; the bytes after its head, or None when refused."""
        client.settimeout(self.connect_timeout_s)
        head = b""
        while b"\r\n\r\n" not in head:
            if len(head) > MAX_HEAD:
                self._refuse(client, "431 Request Header Fields Too Large")
                return None
            data = client.recv(MAX_HEAD)
            if not data:
                return None
            head += data
        head, _, rest = head.partition(b"\r\n\r\n")
        method, _, line = head.split(b"\r\n", 1)[0].partition(b" ")
        target, _, version = line.partition(b" ")
        if method != b"CONNECT" or target.lower() != self.pin.authority or not version.startswith(b"HTTP/1."):
            log.warning("tunnel for %s refused %r", self.pin.host, head.split(b"\r\n", 1)[0][:200])
            self._refuse(client, "403 Forbidden")
            return None
        return rest

    @staticmethod
    def _refuse(client: socket.socket, status: str) -> None:
        with contextlib.suppress(OSError):
            client.sendall(_refusal(status))
        client.close()

    @staticmethod
    def _relay(a: socket.socket, b: socket.socket) -> None:
        """Copy bytes both ways until either side closes (or :meth:`close` shuts them down)."""
        peer = {a: b, b: a}
        with selectors.DefaultSelector() as sel:
            sel.register(a, selectors.EVENT_READ)
            sel.register(b, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select():
                    src = key.fileobj
                    assert isinstance(src, socket.socket)
                    data = src.recv(CHUNK)
                    if not data:
                        return
                    peer[src].sendall(data)  # blocking: a slow reader throttles the other side
