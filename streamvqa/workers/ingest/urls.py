"""Which kind of source a URL names, and what PyAV should open for it."""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .errors import IngestError


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
    """

    kind: SourceKind
    target: str
    url: str
    options: Mapping[str, str] = field(default_factory=dict)


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

    HTTP(S): the ``Host`` header is the original one, and FFmpeg may follow no redirect (the
    server's pre-flight already followed and checked them; a redirect appearing later would name
    an unchecked host). FFmpeg sends no TLS SNI to an IP literal, so an https server that needs SNI
    does not open. RTSP has no Host header; its request URIs carry the IP.
    """
    target, hostport = pin_url(url, address)
    options: dict[str, str] = {}
    if kind is SourceKind.HTTP:
        options = {"headers": f"Host: {hostport}\r\n", "max_redirects": "0"}
    return SourceUrl(kind, target, url, options)
