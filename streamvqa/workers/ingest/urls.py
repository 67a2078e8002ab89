"""Which kind of source a URL names, and what PyAV should open for it."""

from __future__ import annotations

import enum
from dataclasses import dataclass
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
        target: what to pass to ``av.open`` (the URL itself, or a local filesystem path).
        url: the URL as given.
    """

    kind: SourceKind
    target: str
    url: str


def parse_source_url(url: str) -> SourceUrl:
    """Classify ``url``; raise :class:`IngestError` ``unsupported_scheme`` if it is not servable.

    Accepts ``rtsp://``, ``rtsps://``, ``http://``, ``https://``, ``file://`` URLs and plain
    filesystem paths (absolute or relative, no scheme).
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
    return SourceUrl(kind, url, url)
