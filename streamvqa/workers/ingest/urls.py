"""Which kind of source a URL names, and what PyAV should open for it."""

from __future__ import annotations

import enum
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .errors import IngestError
from .tunnel import TunnelPin


class SourceKind(enum.StrEnum):
    """How a source is opened and how its end is interpreted."""

    RTSP = "rtsp"  # live: end of stream or a drop means reconnect
    HTTP = "http"  # file or live over HTTP: end of stream ends, a drop reconnects
    FILE = "file"  # local file: end of stream ends, errors are final

    @property
    def is_network(self) -> bool:
        return self is not SourceKind.FILE


_SCHEMES: dict[str, SourceKind] = {
    "rtsp": SourceKind.RTSP,
    "rtsps": SourceKind.RTSP,
    "http": SourceKind.HTTP,
    "https": SourceKind.HTTP,
    "file": SourceKind.FILE,
}

SUPPORTED_SCHEMES: tuple[str, ...] = tuple(_SCHEMES)


@dataclass(frozen=True)
class SourceUrl:
    """A validated source location.

    Attributes:
        kind: the source kind.
        target: what to pass to ``av.open`` (the URL itself, the URL with its host replaced by the
            pinned address, or a local filesystem path).
        url: the URL as given.
        options: FFmpeg protocol options the pinned address needs (HTTP: the original ``Host``
            header and no redirects), merged over the kind's own options.
        tunnel: for a pinned https URL opened by name: the CONNECT tunnel to run for it (its
            ``http_proxy`` is added to ``options`` when the source opens; see :mod:`.tunnel`).
    """

    kind: SourceKind
    target: str
    url: str
    options: Mapping[str, str] = field(default_factory=dict)
    tunnel: TunnelPin | None = None


def parse_source_url(url: str, address: str | None = None) -> SourceUrl:
    """Classify ``url``; raise :class:`IngestError` ``unsupported_scheme`` if it is not servable.

    Accepts ``rtsp://``, ``rtsps://``, ``http://``, ``https://``, ``file://`` URLs and plain
    filesystem paths (absolute or relative, no scheme). ``address``: the IP the server's URL
    policy checked for the host (DNS pinning); FFmpeg is then handed that IP, never the name.
    """
    if not isinstance(url, str) or not url.strip():
        raise IngestError("unsupported_scheme", "empty source URL")
    url = url.strip()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if not scheme:
        return SourceUrl(SourceKind.FILE, str(Path(url)), url)
    if scheme not in _SCHEMES:
        raise IngestError(
            "unsupported_scheme",
            f"scheme {scheme!r} is not supported (use one of {', '.join(SUPPORTED_SCHEMES)}; "
            "WebRTC goes through WHIP)",
        )
    kind = _SCHEMES[scheme]
    if kind is SourceKind.FILE:
        if parts.netloc not in ("", "localhost"):
            raise IngestError("unsupported_scheme", f"file URL with a remote host: {url!r}")
        return SourceUrl(kind, unquote(parts.path), url)
    if not parts.hostname:
        raise IngestError("unsupported_scheme", f"URL has no host: {url!r}")
    if address is None:
        return SourceUrl(kind, url, url)
    return _pinned(kind, url, address)


def pin_url(url: str, address: str) -> tuple[str, str]:
    """``url`` with its host replaced by the IP ``address``, and the original ``host[:port]`` (what
    a ``Host`` header must say)."""
    ip = ipaddress.ip_address(address)
    parts = urlsplit(url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    try:
        port = parts.port
    except ValueError:
        raise IngestError("unsupported_scheme", f"URL has an invalid port: {url!r}") from None
    if any(ord(c) < 0x21 or c == "\x7f" for c in hostport):  # it goes into a header line
        raise IngestError("unsupported_scheme", f"URL host has control characters: {url!r}")
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    netloc = (userinfo + "@" if userinfo else "") + host + (f":{port}" if port else "")
    return parts._replace(netloc=netloc).geturl(), hostport


def _pinned(kind: SourceKind, url: str, address: str) -> SourceUrl:
    """What FFmpeg opens for ``url`` pinned to ``address``.

    HTTP(S) may follow no redirect (the server's pre-flight already followed and checked them; a
    redirect appearing later would name an unchecked host). https by name: the URL as given, with
    a CONNECT tunnel that dials only ``address``, so TLS SNI, ``Host`` and the certificate name
    stay the name. Otherwise the IP replaces the name: HTTP keeps the name in a ``Host`` header;
    rtsps (FFmpeg's RTSP ignores ``http_proxy``) sends no SNI, so a server that needs SNI does
    not open; RTSP request URIs carry the IP.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme.lower() == "https" and not _is_ip(host) and not _ffmpeg_bypasses_proxy(host):
        try:
            port = parts.port or 443
        except ValueError:
            raise IngestError("unsupported_scheme", f"URL has an invalid port: {url!r}") from None
        pin = TunnelPin(host, port, str(ipaddress.ip_address(address)))
        return SourceUrl(kind, url, url, {"max_redirects": "0"}, tunnel=pin)
    target, hostport = pin_url(url, address)
    options: dict[str, str] = {}
    if kind is SourceKind.HTTP:
        options = {"headers": f"Host: {hostport}\r\n", "max_redirects": "0"}
    return SourceUrl(kind, target, url, options)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _ffmpeg_bypasses_proxy(host: str) -> bool:
    """Whether the ``no_proxy`` environment variable could make FFmpeg skip ``http_proxy`` for
    ``host`` (and resolve the name itself, unpinned).

    A superset of FFmpeg's ``ff_http_match_no_proxy`` (``*``, or a pattern that is the host or a
    domain suffix of it, ``*.``/``.`` prefixes ignored; case-insensitive here, exact there).
    """
    host = host.lower()
    for pattern in os.environ.get("no_proxy", "").replace(",", " ").split():
        pattern = pattern.lower().removeprefix("*").removeprefix(".")
        if pattern in ("", "*") or host == pattern or host.endswith("." + pattern):
            return True
    return False
