"""What ``POST /v1/streams`` refuses before it creates anything: a source URL that does not
parse, an unsupported scheme, or a file that is not under the media root. (Whether a network
source answers is only known once it is opened: ``?probe=true``, or ``last_error`` later.)"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from streamvqa.proto import ApiError
from streamvqa.workers.ingest.errors import IngestError
from streamvqa.workers.ingest.urls import SourceKind, parse_source_url

from .urlpolicy import UrlPolicy

_HOST_LABELS = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?$")


def check_network_url(url: str) -> None:
    """``invalid_request`` unless ``url`` has a host a resolver could be asked about and a valid port."""
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise ApiError("invalid_request", "url: whitespace or control characters in the URL")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
        host = parts.hostname or ""
    except ValueError as e:
        raise ApiError("invalid_request", f"url: does not parse ({e})") from None
    if ":" in host:  # an IPv6 literal (urlsplit checked the brackets)
        try:
            ipaddress.IPv6Address(host.split("%")[0])
        except ValueError:
            raise ApiError("invalid_request", f"url: {host!r} is not an IPv6 address") from None
        return
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        ascii_host = ""
    if not _HOST_LABELS.match(ascii_host):
        raise ApiError("invalid_request", f"url: {host!r} is not a host name")


def precheck_source(url: str, policy: UrlPolicy) -> None:
    """Refuse at once what needs no connection: ``unsupported_scheme``, ``invalid_request`` (the
    URL does not parse), ``url_forbidden`` (outside the media root), ``source_unreachable`` (no
    such file). The URL policy's network checks still run when the stream is created."""
    try:
        src = parse_source_url(url)
    except IngestError as e:
        raise ApiError(e.code, e.message) from None
    except ValueError as e:  # urlsplit: e.g. an unclosed IPv6 bracket
        raise ApiError("invalid_request", f"url: does not parse ({e})") from None
    if src.kind is not SourceKind.FILE:
        check_network_url(src.url)
        return
    path = Path(policy.check_file(src.target))
    if not path.is_file():
        raise ApiError("source_unreachable", f"no such file: {path}")  # the handler makes it relative
    if not os.access(path, os.R_OK):
        raise ApiError("source_unreachable", f"file not readable by the server: {path}")
