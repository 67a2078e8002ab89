"""DNS rebinding: a name answering an allowed address first and 127.0.0.1 afterwards.

The resolver is faked (``socket.getaddrinfo`` monkeypatched: fault injection); the check, the
pre-flight's connection and what PyAV/FFmpeg is handed are real. What is connected to must be
the first, checked answer, never the loopback one.
"""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from streamvqa.server.urlpolicy import CheckedSource, UrlPolicy
from streamvqa.workers.ingest import IngestConfig, IngestError
from streamvqa.workers.ingest import source as ingest_source
from streamvqa.workers.ingest.tunnel import TunnelPin
from streamvqa.workers.ingest.worker import probe_source
from tests.ingest.conftest import RtspServer, _RangeHandler, free_port, gst_rtsp  # noqa: F401 - fixture

from .conftest import ALICE, bearer, lean_settings, wait_stream

PUBLIC = "93.184.216.34"


class RebindingResolver:
    """``getaddrinfo`` for the names in ``first``: their first lookup answers ``first[name]``, every
    later one 127.0.0.1. Other names go to the real resolver."""

    def __init__(self, first: dict[str, str]) -> None:
        self.first = first
        self.lookups: dict[str, int] = {}
        self.real = socket.getaddrinfo

    def __call__(self, host, port, *args, **kwargs):
        if isinstance(host, bytes):
            host = host.decode()
        if host not in self.first:
            return self.real(host, port, *args, **kwargs)
        n = self.lookups[host] = self.lookups.get(host, 0) + 1
        ip = self.first[host] if n == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, int(port or 0)))]


@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch) -> RebindingResolver:
    resolver = RebindingResolver({"rebind.example": PUBLIC, "rebind.test": "127.0.0.2"})
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    return resolver


def strict_policy(**overrides) -> UrlPolicy:
    return UrlPolicy(lean_settings(**{"allow_private_networks": False, "open_timeout_s": 2.0, **overrides}))


def opened_with(monkeypatch: pytest.MonkeyPatch, config: IngestConfig, times: int) -> list[tuple[str, dict]]:
    """What ``open_source`` hands ``av.open`` on ``times`` opens (first open and reconnects); the
    fake ``av.open`` records it and refuses, as an unreachable source would."""
    calls: list[tuple[str, dict]] = []

    def fake_open(target, options=None, **kwargs):
        calls.append((target, dict(options or {})))
        raise ConnectionRefusedError(111, "refused")

    monkeypatch.setattr(ingest_source.av, "open", fake_open)
    for _ in range(times):
        with pytest.raises(IngestError):
            ingest_source.open_source(config)
    return calls


def test_rtsp_is_pinned_to_the_checked_address(rebinding: RebindingResolver,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    url = "rtsp://user:pw@rebind.example:8554/cam"
    checked = asyncio.run(strict_policy().check(url))
    assert checked == CheckedSource(url, PUBLIC)
    config = IngestConfig(url=checked.url, address=checked.address)
    calls = opened_with(monkeypatch, config, times=3)  # the first open and two reconnects
    assert [target for target, _ in calls] == [f"rtsp://user:pw@{PUBLIC}:8554/cam"] * 3
    assert not any("127.0.0.1" in target or "rebind" in target for target, _ in calls)
    assert rebinding.lookups == {"rebind.example": 1}  # nobody asked the resolver again


def test_http_preflight_and_ffmpeg_are_pinned(rebinding: RebindingResolver,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The pre-flight connects to the checked address with the name as Host and TLS SNI; FFmpeg is
    handed the name (for SNI and Host), a local CONNECT tunnel pinned to that address as its
    ``http_proxy`` (test_sni_tunnel.py), and no redirects."""
    connected: list[tuple[str, str, str]] = []

    async def fake_send(self, request: httpx.Request) -> httpx.Response:
        connected.append((request.url.host, request.headers["host"], request.extensions.get("sni_hostname")))
        return httpx.Response(206, request=request)

    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", fake_send)
    url = "https://rebind.example/live/clip.mp4"
    checked = asyncio.run(strict_policy().check(url))
    assert checked == CheckedSource(url, PUBLIC)
    assert connected == [(PUBLIC, "rebind.example", "rebind.example")]
    config = IngestConfig(url=checked.url, address=checked.address)
    calls = opened_with(monkeypatch, config, times=2)
    assert config.source.tunnel == TunnelPin("rebind.example", 443, PUBLIC)
    for target, options in calls:
        assert target == url and "headers" not in options and options["max_redirects"] == "0"
        assert options["http_proxy"].startswith("http://127.0.0.1:")
    assert rebinding.lookups == {"rebind.example": 1}


@pytest.mark.parametrize("url,address,target,host", [
    ("http://cam.example:8080/a?b=c", "2606:4700::1111", "http://[2606:4700::1111]:8080/a?b=c",
     "cam.example:8080"),
    ("http://u:p@cam.example/x", "8.8.8.8", "http://u:p@8.8.8.8/x", "cam.example"),
    ("rtsps://cam.example/x", "8.8.4.4", "rtsps://8.8.4.4/x", None),  # FFmpeg cannot tunnel rtsps
    ("https://[2606:4700::1111]/x", "2606:4700::1111", "https://[2606:4700::1111]/x", "[2606:4700::1111]"),
])
def test_pinned_targets(url: str, address: str, target: str, host: str | None) -> None:
    src = IngestConfig(url=url, address=address).source
    assert src.target == target and src.url == url and src.tunnel is None  # IP literals need no SNI
    assert src.options.get("headers") == (f"Host: {host}\r\n" if host else None)


def test_a_host_header_cannot_be_smuggled() -> None:
    """The name goes into FFmpeg's header block: a control character in it is refused."""
    with pytest.raises(IngestError) as e:
        _ = IngestConfig(url="http://cam.example\x0bX-Evil:1/x", address="8.8.8.8").source
    assert e.value.code == "unsupported_scheme"


def test_a_pinned_address_must_be_an_ip() -> None:
    with pytest.raises(ValueError):
        IngestConfig(url="rtsp://cam.example/x", address="cam.example")
    # what the server sends the encoder (enc.ingest: JSON) keeps the pin
    config = IngestConfig(url="rtsp://cam.example/x", address="8.8.8.8")
    assert IngestConfig.model_validate_json(config.model_dump_json()).source.target == "rtsp://8.8.8.8/x"


class _Recording(_RangeHandler):
    """Serves the media directory and records ``(server address, Host header)`` per request."""

    seen: list[tuple[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self.seen.append((self.server.server_address[0], self.headers.get("Host", "")))
        if self.path == "/moved":  # a redirect a source might introduce after the check
            self.send_response(302)
            self.send_header("Location", "/pinned_clip.mp4")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()


@pytest.fixture
def twin_servers(media_dir: Path) -> Iterator[tuple[int, list[tuple[str, str]]]]:
    """The same files on 127.0.0.2 (the checked address) and 127.0.0.1 (what the rebinding resolver
    answers later) on one port; yields the port and the shared request log."""
    seen: list[tuple[str, str]] = []

    class Handler(_Recording):
        pass

    Handler.seen = seen

    def handler(*a, **kw):
        return Handler(*a, directory=str(media_dir), **kw)

    first = http.server.ThreadingHTTPServer(("127.0.0.2", 0), handler)
    port = first.server_address[1]
    servers = [first, http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    try:
        yield port, seen
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()
        for t in threads:
            t.join(5)


def test_rebinding_never_reaches_loopback_end_to_end(secure_client, rebinding: RebindingResolver,
                                                     twin_servers, media_dir: Path, clip: Path) -> None:
    """Real sockets: the pre-flight (httpx) and FFmpeg both talk to 127.0.0.2, the address that was
    checked (allowed explicitly, standing in for a public one), with ``Host: rebind.test``; the
    127.0.0.1 twin gets no request. FFmpeg cannot resolve ``rebind.test`` itself, so frames
    arriving also prove it was handed the IP."""
    port, seen = twin_servers
    (media_dir / "pinned_clip.mp4").write_bytes(clip.read_bytes())
    client = secure_client(allowed_networks="127.0.0.2/32", realtime_files=False)
    a = bearer(ALICE)
    r = client.post("/v1/streams", json={"url": f"http://rebind.test:{port}/pinned_clip.mp4", "fps": 5},
                    headers=a)
    assert r.status_code == 201, r.text
    info = wait_stream(_Authed(client, a), r.json()["id"], lambda s: s["state"] in ("ended", "failed"))
    assert info["state"] == "ended" and info["frames_decoded"] == 30, info
    assert len(seen) >= 2  # the pre-flight and FFmpeg's reads
    assert set(seen) == {("127.0.0.2", f"rebind.test:{port}")}
    assert rebinding.lookups == {"rebind.test": 1}


def test_ffmpeg_follows_no_redirect_when_pinned(twin_servers, media_dir: Path, clip: Path) -> None:
    """A redirect appearing after the pre-flight (e.g. on a reconnect) is not followed: it would
    lead to a host nobody checked."""
    port, seen = twin_servers
    (media_dir / "pinned_clip.mp4").write_bytes(clip.read_bytes())
    config = IngestConfig(url=f"http://cam.test:{port}/moved", address="127.0.0.2", open_timeout_s=5)
    with pytest.raises(IngestError) as e:
        probe_source(config)
    assert e.value.code == "source_unreachable"
    assert seen == [("127.0.0.2", f"cam.test:{port}")]  # /moved only, never its target
    # the same file, pinned, opens (so the failure above is the redirect, not the pinning)
    assert probe_source(IngestConfig(url=f"http://cam.test:{port}/pinned_clip.mp4", address="127.0.0.2"))


@pytest.mark.slow
@pytest.mark.usefixtures("gst_rtsp")
def test_rtsp_rebinding_end_to_end(secure_client, rebinding: RebindingResolver) -> None:
    """Real FFmpeg, real RTSP server on 127.0.0.2 (the checked address); a listener on 127.0.0.1 at
    the same port stands for the service rebinding aims at and must see no connection."""
    port = free_port()
    server = RtspServer(port, ["--host", "127.0.0.2", "--fps", "15", "--width", "320", "--height", "240"])
    trap = socket.create_server(("127.0.0.1", port))
    trap.settimeout(0.0)
    try:
        server.start()
        client = secure_client(allowed_networks="127.0.0.2/32")
        a = bearer(ALICE)
        r = client.post("/v1/streams", json={"url": f"rtsp://rebind.test:{port}/test", "fps": 5}, headers=a)
        assert r.status_code == 201, r.text
        info = wait_stream(_Authed(client, a), r.json()["id"],
                           lambda s: s["frames_decoded"] >= 10 or s["state"] == "failed")
        assert info["state"] != "failed" and info["frames_decoded"] >= 10, info
        assert client.delete(f"/v1/streams/{r.json()['id']}", headers=a).status_code == 204
        with pytest.raises(BlockingIOError):
            trap.accept()  # nobody connected to 127.0.0.1
        assert rebinding.lookups == {"rebind.test": 1}
    finally:
        trap.close()
        server.close()


class _Authed:
    """``get`` with fixed headers (for wait_stream)."""

    def __init__(self, client, headers: dict) -> None:
        self.client, self.headers = client, headers

    def get(self, url: str):
        return self.client.get(url, headers=self.headers)
