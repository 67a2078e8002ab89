"""URL policy attacks: files outside the media root, SSRF to private addresses, DNS, redirects."""

from __future__ import annotations

import http.server
import ipaddress
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamvqa.proto import ApiError
from streamvqa.server.urlpolicy import UrlPolicy, is_public, parse_networks

from .conftest import ALICE, bearer, error_code, lean_settings, wait_stream


def policy(**overrides) -> UrlPolicy:
    return UrlPolicy(lean_settings(**{"allow_private_networks": False, **overrides}))


@pytest.mark.parametrize("ip,public", [
    ("8.8.8.8", True), ("2606:4700::1111", True), ("127.0.0.1", False), ("10.1.2.3", False),
    ("172.16.0.1", False), ("192.168.1.1", False), ("169.254.169.254", False), ("100.64.0.1", False),
    ("0.0.0.0", False), ("224.0.0.1", False), ("255.255.255.255", False), ("::1", False), ("::", False),
    ("fe80::1", False), ("fc00::1", False), ("ff02::1", False), ("::ffff:127.0.0.1", False),
    ("::ffff:8.8.8.8", True), ("2002:7f00:1::", False),
    # IPv6 forms that carry an IPv4 address: judged by that address (issue 17, item 14)
    ("64:ff9b::7f00:1", False), ("64:ff9b::a00:1", False), ("64:ff9b::a9fe:a9fe", False),
    ("64:ff9b::808:808", True),  # NAT64 well-known prefix
    ("::7f00:1", False), ("::a9fe:a9fe", False), ("::c0a8:101", False), ("::808:808", True),  # IPv4-compatible
    ("::ffff:0:7f00:1", False), ("::ffff:0:a00:1", False), ("::ffff:0:808:808", True),  # IPv4-translated
    ("::ffff:a9fe:a9fe", False), ("::ffff:a00:1", False),  # IPv4-mapped
    ("2002:a9fe:a9fe::1", False), ("2002:c0a8:101::", False), ("2002:808:808::1", True),  # 6to4
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo, client 192.0.2.45
    ("fec0::1", False), ("fec0::808:808", False), ("feff::1", False),  # deprecated site-local
    ("64:ff9b:1::a00:1", False), ("64:ff9b:1::808:808", False),  # NAT64 local-use: refused
    ("3fff::1", False), ("5f00::1", False), ("2001:db8::1", False), ("100::1", False),
])
def test_is_public(ip: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(ip)) is public


def test_file_sources_stay_in_the_media_root(secure_client, media: Path, tmp_path_factory) -> None:
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.mp4").write_bytes(b"secret")
    (media / "sub").mkdir()
    (media / "sub" / "ok.mp4").symlink_to(media / "clip.mp4")  # a link that stays inside: fine
    (media / "escape.mp4").symlink_to(outside / "secret.mp4")  # a link out: refused
    (media / "escape_dir").symlink_to(outside)
    client = secure_client(media_root=media)
    a = bearer(ALICE)
    for url in (str(outside / "secret.mp4"), (outside / "secret.mp4").as_uri(), "/etc/passwd",
                "file:///etc/passwd", f"file://{media}/../{outside.name}/secret.mp4",
                f"{media}/sub/../../{outside.name}/secret.mp4", "../" * 12 + "etc/passwd",
                "escape.mp4", "escape_dir/secret.mp4", f"file://{media}/%2e%2e/{outside.name}/secret.mp4",
                "file://localhost/etc/passwd"):
        r = client.post("/v1/streams", json={"url": url}, headers=a)
        assert r.status_code == 403 and error_code(r) == "url_forbidden", (url, r.text)
    for url in ("clip.mp4", "sub/ok.mp4", (media / "clip.mp4").as_uri(), f"{media}/sub/../clip.mp4"):
        r = client.post("/v1/streams", json={"url": url}, headers=a)
        assert r.status_code == 201, (url, r.text)
        assert r.json()["url"] == url
    assert client.get("/v1/streams", headers=a).json()["streams"]
    # no media root configured: no file sources at all
    client = secure_client(media_root=None)
    r = client.post("/v1/streams", json={"url": (media / "clip.mp4").as_uri()}, headers=a)
    assert r.status_code == 403 and error_code(r) == "url_forbidden"


def test_private_addresses_are_refused(secure_client) -> None:
    client = secure_client()
    a = bearer(ALICE)
    for url in ("rtsp://127.0.0.1:8554/x", "http://127.0.0.1:8000/metrics", "http://localhost/x",
                "http://169.254.169.254/latest/meta-data/", "https://10.0.0.1/x.mp4", "rtsp://[::1]/x",
                "http://[::ffff:127.0.0.1]/x", "http://0.0.0.0:22/", "http://2130706433/x", "http://0x7f000001/",
                "rtsps://192.168.0.10/cam", "http://224.0.0.1/x", "http://user:pw@127.0.0.1/x",
                "http://100.100.100.200/latest/meta-data/", "http://[64:ff9b::7f00:1]/x",
                "rtsp://[64:ff9b::a9fe:a9fe]/x", "http://[::7f00:1]:8000/metrics", "http://[::ffff:0:7f00:1]/x",
                "http://[::ffff:0:a9fe:a9fe]/x", "http://[2002:7f00:1::]/x", "rtsp://[fec0::1]/x"):
        r = client.post("/v1/streams", json={"url": url}, headers=a)
        assert r.status_code == 403 and error_code(r) == "url_forbidden", (url, r.text)
        r = client.post("/v1/streams?probe=true", json={"url": url}, headers=a)
        assert r.status_code == 403 and error_code(r) == "url_forbidden", (url, r.text)
    assert client.get("/v1/streams", headers=a).json() == {"streams": []}


def test_every_dns_answer_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name with one public and one private address is refused (checked after resolution)."""
    import asyncio

    answers = {"mixed.example": ["93.184.216.34", "10.0.0.5"], "public.example": ["93.184.216.34"],
               "rebind.example": ["127.0.0.1"]}
    real = socket.getaddrinfo

    def fake(host, port, *args, **kwargs):
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port or 0)) for ip in answers[host]]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    p = policy()

    async def check(url: str) -> str:
        return await p.check(url)

    for url in ("rtsp://mixed.example/cam", "rtsp://rebind.example/cam"):
        with pytest.raises(ApiError) as e:
            asyncio.run(check(url))
        assert e.value.code == "url_forbidden"
    checked = asyncio.run(check("rtsp://public.example/cam"))
    assert (checked.url, checked.address) == ("rtsp://public.example/cam", "93.184.216.34")
    with pytest.raises(ApiError) as e:
        asyncio.run(check("rtsp://no-such-host.invalid/cam"))
    assert e.value.code == "source_unreachable"
    allowed = policy(allowed_networks="10.0.0.0/8")
    for ip in ("10.0.0.5", "::ffff:a00:5", "64:ff9b::a00:5", "::a00:5", "2002:a00:5::"):
        assert allowed.address_allowed(ipaddress.ip_address(ip)), ip
    assert not allowed.address_allowed(ipaddress.ip_address("64:ff9b::c0a8:105"))  # 192.168.1.5
    assert asyncio.run(allowed.check("rtsp://mixed.example/cam"))
    assert asyncio.run(policy(allow_private_networks=True).check("rtsp://rebind.example/cam"))
    assert [str(n) for n in parse_networks("10.0.0.0/8, 127.0.0.1")] == ["10.0.0.0/8", "127.0.0.1/32"]
    with pytest.raises(ValueError):
        policy(allowed_networks="10.0.0.0/8,not-a-net")


class _Redirector(http.server.BaseHTTPRequestHandler):
    """``/to?<url>`` answers 302 to ``<url>``; ``/loop`` redirects to itself; else 404."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        path, _, query = self.path.partition("?")
        if path == "/to":
            from urllib.parse import unquote

            self.send_response(302)
            self.send_header("Location", unquote(query))
        elif path == "/loop":
            self.send_response(307)
            self.send_header("Location", "/loop")
        else:
            self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def redirector() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_redirects_are_rechecked(secure_client, redirector: str, http_server: str, media_dir: Path,
                                 clip: Path) -> None:
    (media_dir / "redirected_clip.mp4").write_bytes(clip.read_bytes())
    # 127.0.0.1 is allowed explicitly; every other private address is not
    client = secure_client(allowed_networks="127.0.0.1/32", realtime_files=False)
    a = bearer(ALICE)
    for target in ("http://127.0.0.2/x", "http://169.254.169.254/latest/meta-data/", "http://[::1]/x",
                   "file:///etc/passwd", "rtsp://127.0.0.1/x", "gopher://127.0.0.1/x"):
        r = client.post("/v1/streams", json={"url": f"{redirector}/to?{target}"}, headers=a)
        assert r.status_code == 403 and error_code(r) == "url_forbidden", (target, r.text)
    r = client.post("/v1/streams", json={"url": f"{redirector}/loop"}, headers=a)
    assert r.status_code == 403 and "redirects" in r.json()["error"]["message"]
    # an allowed hop is followed, and ingest opens where it led
    r = client.post("/v1/streams", json={"url": f"{redirector}/to?{http_server}/redirected_clip.mp4", "fps": 5},
                    headers=a)
    assert r.status_code == 201, r.text
    info = wait_stream(_Authed(client, a), r.json()["id"], lambda s: s["state"] in ("ended", "failed"))
    assert info["state"] == "ended" and info["frames_decoded"] == 30, info


class _Authed:
    """``get`` with fixed headers (for wait_stream)."""

    def __init__(self, client, headers: dict) -> None:
        self.client, self.headers = client, headers

    def get(self, url: str):
        return self.client.get(url, headers=self.headers)


