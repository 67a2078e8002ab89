"""DNS pinning keeps TLS SNI: a pinned https source reaches FFmpeg by name, through a local CONNECT
tunnel that dials only the pinned address (streamvqa/workers/ingest/tunnel.py).

Real parts: a TLS server on 127.0.0.2 (allowed explicitly, standing in for a public address)
that completes a handshake only when SNI is its name, FFmpeg, the tunnel, the server's
pre-flight. The resolver is faked (fault injection, see test_dns_pinning.py): it answers
127.0.0.2 first and 127.0.0.1 afterwards, where a listener stands for what rebinding aims at.
"""

from __future__ import annotations

import datetime
import http.server
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from streamvqa.workers.ingest import IngestConfig, IngestWorker
from streamvqa.workers.ingest.source import open_source, read_frames
from streamvqa.workers.ingest.tunnel import MAX_CONNECTIONS, ConnectTunnel, TunnelPin
from tests.ingest.conftest import _DroppingHandler
from tests.ingest.helpers import CollectingSink
from tests.ingest.media import read_index

from .conftest import ALICE, bearer, wait_stream
from .test_dns_pinning import RebindingResolver, _Authed

NAME = "rebind.test"


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``name`` and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@dataclass
class SniServer:
    """What the TLS server saw: the SNI of every handshake and ``(SNI, Host)`` per request."""

    port: int
    handler: type[_DroppingHandler] = _DroppingHandler  # set ``handler.drops_left`` to cut GETs
    sni: list[str | None] = field(default_factory=list)
    requests: list[tuple[str | None, str]] = field(default_factory=list)


@pytest.fixture
def sni_server(tmp_path: Path, clip: Path) -> Iterator[SniServer]:
    """HTTPS on 127.0.0.2 serving ``clip.mp4``; a handshake whose SNI is not ``rebind.test`` is
    refused (``unrecognized_name``), as a CDN without that site would."""
    (tmp_path / "clip.mp4").write_bytes(clip.read_bytes())
    cert, key = self_signed(tmp_path, NAME)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    seen = SniServer(0)

    def check_sni(sock: ssl.SSLSocket, name: str | None, _ctx: ssl.SSLContext) -> int | None:
        seen.sni.append(name)
        sock.sni = name  # for the request log
        return None if name == NAME else ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME

    ctx.sni_callback = check_sni

    class Handler(_DroppingHandler):
        drops_left = 0

        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, directory=str(tmp_path), **kw)

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            seen.requests.append((getattr(self.connection, "sni", None), self.headers.get("Host", "")))
            super().do_GET()

    class TlsServer(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def get_request(self):
            sock, addr = super().get_request()
            sock.settimeout(10)
            return ctx.wrap_socket(sock, server_side=True), addr

        def handle_error(self, request, client_address) -> None:  # refused handshakes: expected
            pass

    server = TlsServer(("127.0.0.2", 0), Handler)
    seen.port, seen.handler = server.server_address[1], Handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch) -> RebindingResolver:
    """``rebind.test`` answers 127.0.0.2 first, 127.0.0.1 afterwards."""
    resolver = RebindingResolver({NAME: "127.0.0.2"})
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    return resolver


@pytest.fixture
def loopback_trap(sni_server: SniServer) -> Iterator[socket.socket]:
    """A listener on 127.0.0.1 at the TLS server's port: what the rebound name points at."""
    trap = socket.create_server(("127.0.0.1", sni_server.port))
    trap.settimeout(0.0)
    try:
        yield trap
    finally:
        trap.close()


def assert_untouched(trap: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        trap.accept()


def test_pinned_https_keeps_sni_end_to_end(secure_client, rebinding: RebindingResolver, sni_server: SniServer,
                                           loopback_trap: socket.socket) -> None:
    """The stream decodes every frame from a server that needs SNI; each handshake (pre-flight and
    FFmpeg) carried the name, each request ``Host`` = name; 127.0.0.1 saw no connection; the name
    was resolved once. Before the tunnel, FFmpeg was handed the IP, sent no SNI and failed."""
    client = secure_client(allowed_networks="127.0.0.2/32", realtime_files=False)
    a = bearer(ALICE)
    url = f"https://{NAME}:{sni_server.port}/clip.mp4"
    r = client.post("/v1/streams", json={"url": url, "fps": 5}, headers=a)
    assert r.status_code == 201, r.text
    info = wait_stream(_Authed(client, a), r.json()["id"], lambda s: s["state"] in ("ended", "failed"))
    assert info["state"] == "ended" and info["frames_decoded"] == 30, info
    assert len(sni_server.requests) >= 2  # the pre-flight and FFmpeg's reads
    assert set(sni_server.sni) == {NAME}
    assert set(sni_server.requests) == {(NAME, f"{NAME}:{sni_server.port}")}
    assert_untouched(loopback_trap)
    assert rebinding.lookups == {NAME: 1}


def test_tunnel_lives_and_dies_with_the_source(sni_server: SniServer, loopback_trap: socket.socket) -> None:
    """No resolver at all (``rebind.test`` does not resolve): frames prove FFmpeg went through
    the tunnel to the pinned address; closing the source closes the tunnel and its threads."""
    config = IngestConfig(url=f"https://{NAME}:{sni_server.port}/clip.mp4", address="127.0.0.2")
    opened = open_source(config)
    try:
        assert opened.tunnel is not None
        indices = [read_index(f.to_ndarray(format="rgb24")) for f in read_frames(opened)]
    finally:
        opened.close()
    assert indices == list(range(30))  # every frame, decoded right
    assert set(sni_server.sni) == {NAME}
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", opened.tunnel.port), timeout=2).close()
    assert not [t for t in threading.enumerate() if t.name.startswith("sni-tunnel")]
    assert_untouched(loopback_trap)


def test_a_drop_reconnects_through_a_new_tunnel(sni_server: SniServer, loopback_trap: socket.socket) -> None:
    """The first response is cut halfway: the worker reconnects (a new source, a new tunnel),
    seeks back and delivers every frame once; every handshake still carried the name."""
    sni_server.handler.drops_left = 1
    sink = CollectingSink()
    config = IngestConfig(url=f"https://{NAME}:{sni_server.port}/clip.mp4", address="127.0.0.2", fps=10,
                          queue_size=1000, backoff_initial_s=0.05, read_timeout_s=5)
    worker = IngestWorker(config, sink).start()
    try:
        assert worker.wait(timeout=60), "worker did not finish"
    finally:
        worker.stop()
    assert worker.reconnects == 1 and worker.state_history[-1] == "ended", worker.stats()
    assert [read_index(f.image) for f in sink.snapshot()] == list(range(30))
    assert len(sni_server.sni) >= 2 and set(sni_server.sni) == {NAME}
    assert not [t for t in threading.enumerate() if t.name.startswith("sni-tunnel")]
    assert_untouched(loopback_trap)


def test_a_playlist_cannot_lead_past_the_tunnel(sni_server: SniServer, loopback_trap: socket.socket,
                                                tmp_path: Path) -> None:
    """An HLS playlist fetched through the tunnel naming a segment on another host (here
    127.0.0.1, plain http): FFmpeg asks the tunnel for it, the tunnel refuses, nothing connects
    there; the segments on the pinned host still decode."""
    (tmp_path / "hls").mkdir()
    with av.open(str(tmp_path / "clip.mp4")) as src, av.open(
        str(tmp_path / "hls" / "index.m3u8"), "w", format="hls",
        options={"hls_time": "1", "hls_list_size": "0", "hls_playlist_type": "vod"},
    ) as out:
        video = src.streams.video[0]
        copy = out.add_stream_from_template(video)
        for packet in src.demux(video):
            if packet.dts is not None:
                packet.stream = copy
                out.mux(packet)
    lines = (tmp_path / "hls" / "index.m3u8").read_text().splitlines()
    segments = [i for i, line in enumerate(lines) if line.endswith(".ts")]
    assert len(segments) == 3
    lines[segments[1]] = f"http://127.0.0.1:{sni_server.port}/hls/{lines[segments[1]]}"
    (tmp_path / "hls" / "index.m3u8").write_text("\n".join(lines) + "\n")
    opened = open_source(IngestConfig(url=f"https://{NAME}:{sni_server.port}/hls/index.m3u8", address="127.0.0.2"))
    try:
        indices = [read_index(f.to_ndarray(format="rgb24")) for f in read_frames(opened)]
    finally:
        opened.close()
    assert indices == list(range(10)) + list(range(20, 30))  # the middle second is missing
    assert set(sni_server.sni) == {NAME}
    assert_untouched(loopback_trap)


@pytest.fixture
def upstream() -> Iterator[socket.socket]:
    """A plain listener on 127.0.0.2: the pinned address a tunnel dials."""
    s = socket.create_server(("127.0.0.2", 0))
    s.settimeout(5)
    try:
        yield s
    finally:
        s.close()


def connect_request(tunnel: ConnectTunnel, request: bytes) -> bytes:
    """Send ``request`` to the tunnel; everything it answers until it closes or 2 s of silence."""
    with socket.create_connection(("127.0.0.1", tunnel.port), timeout=2) as c:
        if request:
            c.sendall(request)
        answer = b""
        for _ in range(64):  # bounded; a refusal is followed by close
            try:
                data = c.recv(4096)
            except TimeoutError:
                break
            if not data:
                break
            answer += data
        return answer


@pytest.mark.parametrize("request_line", [
    b"CONNECT other.test:{port} HTTP/1.1",  # another name
    b"CONNECT 127.0.0.1:{port} HTTP/1.1",  # an address
    b"CONNECT rebind.test:{other} HTTP/1.1",  # the name on another port
    b"CONNECT rebind.test.evil:{port} HTTP/1.1",
    b"GET http://rebind.test:{port}/ HTTP/1.1",  # a forward-proxy request
])
def test_tunnel_refuses_anything_but_its_pin(upstream: socket.socket, request_line: bytes) -> None:
    port = upstream.getsockname()[1]
    line = request_line.replace(b"{port}", str(port).encode()).replace(b"{other}", str(port + 1).encode())
    with ConnectTunnel(TunnelPin(NAME, port, "127.0.0.2"), connect_timeout_s=2) as tunnel:
        answer = connect_request(tunnel, line + b"\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 403 ")
        upstream.settimeout(0.0)
        with pytest.raises(BlockingIOError):
            upstream.accept()  # nothing was dialled
        # the pin itself is served (the refusals above are about the target, not the tunnel)
        with socket.create_connection(("127.0.0.1", tunnel.port), timeout=2) as c:
            c.sendall(f"CONNECT {NAME.upper()}:{port} HTTP/1.1\r\n\r\nhello".encode())
            assert c.recv(4096) == b"HTTP/1.1 200 Connection established\r\n\r\n"
            upstream.settimeout(5)
            peer, _ = upstream.accept()
            with peer:
                assert peer.recv(5) == b"hello"
                peer.sendall(b"world")
                assert c.recv(5) == b"world"


def test_tunnel_bounds_its_connections(upstream: socket.socket) -> None:
    """Past MAX_CONNECTIONS concurrent connections the tunnel answers 503 instead of a thread."""
    port = upstream.getsockname()[1]
    with ConnectTunnel(TunnelPin(NAME, port, "127.0.0.2"), connect_timeout_s=5) as tunnel:
        held = []
        try:
            for _ in range(MAX_CONNECTIONS):  # established tunnels hold their slots
                c = socket.create_connection(("127.0.0.1", tunnel.port), timeout=5)
                c.sendall(f"CONNECT {NAME}:{port} HTTP/1.1\r\n\r\n".encode())
                assert c.recv(4096).startswith(b"HTTP/1.1 200 ")
                held.append(c)
                held.append(upstream.accept()[0])
            # refused on accept, before it is read (sending first could meet a reset instead)
            assert connect_request(tunnel, b"").startswith(b"HTTP/1.1 503 ")
            upstream.settimeout(0.0)
            with pytest.raises(BlockingIOError):
                upstream.accept()  # and not dialled
        finally:
            for s in held:
                s.close()


@pytest.mark.parametrize("no_proxy,tunnelled", [
    ("", True), ("other.test,example.com", True), ("*", False), (".test", False), ("localhost, *.test", False),
    ("REBIND.TEST", False),
])
def test_no_proxy_falls_back_to_ip_pinning(monkeypatch: pytest.MonkeyPatch, no_proxy: str, tunnelled: bool) -> None:
    """FFmpeg skips ``http_proxy`` for names matching ``no_proxy`` and would resolve them itself;
    then the source is pinned by IP (no SNI) instead of by tunnel."""
    monkeypatch.setenv("no_proxy", no_proxy)
    source = IngestConfig(url=f"https://{NAME}:8443/x.mp4", address="8.8.8.8").source
    if tunnelled:
        assert source.target == f"https://{NAME}:8443/x.mp4" and source.tunnel == TunnelPin(NAME, 8443, "8.8.8.8")
    else:
        assert source.target == "https://8.8.8.8:8443/x.mp4" and source.tunnel is None
        assert source.options["headers"] == f"Host: {NAME}:8443\r\n"
    assert source.options["max_redirects"] == "0"


def test_tunnel_waits_for_a_paused_reader(upstream: socket.socket) -> None:
    """A paced FFmpeg may stop reading for longer than the connect timeout while the server keeps
    sending: the relay blocks (bounded by socket buffers) and loses nothing."""
    port = upstream.getsockname()[1]
    payload = bytes(range(256)) * (8 * 4096)  # 8 MiB: far more than the socket buffers hold
    with ConnectTunnel(TunnelPin(NAME, port, "127.0.0.2"), connect_timeout_s=0.2) as tunnel:
        with socket.create_connection(("127.0.0.1", tunnel.port), timeout=10) as c:
            c.sendall(f"CONNECT {NAME}:{port} HTTP/1.1\r\n\r\n".encode())
            assert c.recv(4096).startswith(b"HTTP/1.1 200 ")
            peer, _ = upstream.accept()
            with peer:
                sender = threading.Thread(target=peer.sendall, args=(payload,), daemon=True)
                sender.start()
                threading.Event().wait(1.0)  # the reader pauses, 5x the connect timeout
                received = bytearray()
                while len(received) < len(payload):
                    data = c.recv(1 << 20)
                    if not data:
                        break
                    received += data
                sender.join(10)
    assert received == payload
