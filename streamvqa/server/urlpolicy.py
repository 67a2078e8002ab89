"""Which source URLs the server may open (SSRF and local-file protection).

Called by the registry before ingest starts; returns what ingest should open
(:class:`CheckedSource`):

* ``file://`` URLs and plain paths: only inside ``settings.media_root`` (relative paths are taken
  relative to it). The path is resolved (symlinks followed, ``..`` collapsed) and must stay
  inside the resolved root; the resolved path is what ingest opens. No media root: no files.
* ``rtsp(s)://`` and ``http(s)://``: the host is resolved and *every* address must be public
  (:func:`is_public`; IPv6 forms carrying an IPv4 address are judged by it), unless
  ``allow_private_networks`` is set or the address is inside one of ``allowed_networks``.
* DNS pinning: the first checked address is the one connected to, by the pre-flight and by
  FFmpeg (``IngestConfig.address``: the IP goes into the URL FFmpeg opens; HTTP keeps the name in
  ``Host``, the pre-flight also as TLS SNI). A rebinding resolver's later answers are never asked.
  Ingest reconnects keep the pinned address for the stream's life.
* ``http(s)://``: a pre-flight ``GET`` with redirects disabled follows up to ``max_redirects``
  ``Location`` hops itself, checking and pinning each hop like the first URL; ingest then opens
  the final URL at its pinned address with FFmpeg's redirects off.

With ``allow_private_networks`` nothing is checked, so nothing is pinned (FFmpeg resolves and
follows redirects itself). Known limits (docs/security.md): HLS/DASH playlists may name other
hosts; egress network policy is the backstop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from streamvqa.proto import ApiError
from streamvqa.workers.ingest.errors import IngestError
from streamvqa.workers.ingest.urls import SourceKind, parse_source_url, pin_url

from .settings import ServerSettings

log = logging.getLogger(__name__)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_REDIRECTS = (301, 302, 303, 307, 308)


@dataclass(frozen=True)
class CheckedSource:
    """What ingest opens: ``url`` (a resolved path for files, the final URL after redirects) and
    ``address``, the checked IP of its host that ingest must connect to (None: nothing was
    resolved, i.e. a file, or ``allow_private_networks``)."""

    url: str
    address: str | None = None


def parse_networks(text: str) -> list[IpNetwork]:
    """``"10.0.0.0/8, 192.168.1.7"`` -> networks; ``ValueError`` on a bad entry."""
    nets: list[IpNetwork] = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if part:
            nets.append(ipaddress.ip_network(part, strict=False))
    return nets


# IPv6 prefixes whose low 32 bits are the IPv4 address packets really go to
_EMBEDDING_NETS = (
    ipaddress.IPv6Network("64:ff9b::/96"),  # NAT64 well-known prefix (RFC 6052)
    ipaddress.IPv6Network("::/96"),  # IPv4-compatible (deprecated; Linux sit tunnels still route it)
    ipaddress.IPv6Network("::ffff:0:0:0/96"),  # IPv4-translated (SIIT, RFC 2765)
)
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_NOT_PUBLIC_V6 = (ipaddress.IPv6Network("3fff::/20"),)  # documentation (RFC 9637); Python 3.11 calls it global


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for: IPv4-mapped (``::ffff:0:0/96``), 6to4
    (``2002::/16``), Teredo (the client), NAT64 ``64:ff9b::/96``, IPv4-compatible ``::/96`` and
    IPv4-translated ``::ffff:0:0:0/96``; None for a native IPv6 address."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in net for net in _EMBEDDING_NETS):
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return None


def is_public(ip: IpAddress) -> bool:
    """Globally routable unicast (not private, loopback, link-local, CGNAT, reserved, unspecified,
    multicast). IPv6 forms that carry an IPv4 address (:func:`embedded_ipv4`) are judged by that
    address; other IPv6 must be global unicast (``2000::/3``: this refuses site-local
    ``fec0::/10``, NAT64 local-use ``64:ff9b:1::/48`` and reserved space)."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            return is_public(inner)
        if ip not in _GLOBAL_UNICAST or any(ip in net for net in _NOT_PUBLIC_V6):
            return False
    return bool(ip.is_global) and not ip.is_multicast and not ip.is_unspecified


class UrlPolicy:
    """The URL rules of one server (see the module docstring)."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.allow_private = settings.allow_private_networks
        try:
            self.allowed = parse_networks(settings.allowed_networks)
        except ValueError as e:
            raise ValueError(f"invalid setting allowed_networks: {e}") from None
        self.media_root = Path(settings.media_root).resolve() if settings.media_root else None
        self.max_redirects = settings.max_redirects
        self.timeout_s = settings.open_timeout_s

    # -- files --------------------------------------------------------------------------------

    def check_file(self, target: str) -> str:
        """The resolved path of a file source inside the media root, or ``url_forbidden``."""
        if self.media_root is None:
            raise ApiError("url_forbidden", "file sources are disabled (no media root is configured)")
        if "\x00" in target:
            raise ApiError("url_forbidden", "NUL in file path")
        path = Path(target)
        if not path.is_absolute():
            path = self.media_root / path
        resolved = path.resolve()  # follows every symlink, collapses ..
        if not resolved.is_relative_to(self.media_root):
            raise ApiError("url_forbidden", "file sources must be inside the media root")
        return str(resolved)

    # -- network ------------------------------------------------------------------------------

    def address_allowed(self, ip: IpAddress) -> bool:
        if self.allow_private or is_public(ip):
            return True
        candidates: list[IpAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and (inner := embedded_ipv4(ip)) is not None:
            candidates.append(inner)  # e.g. allowed 10.0.0.0/8 also allows NAT64 64:ff9b::a00:5
        return any(c.version == net.version and c in net for c in candidates for net in self.allowed)

    async def resolve(self, host: str, port: int | None) -> list[IpAddress]:
        """Every address ``host`` resolves to (an IP literal: itself)."""
        try:
            return [ipaddress.ip_address(host.strip("[]"))]
        except ValueError:
            pass
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM), self.timeout_s
            )
        except (OSError, TimeoutError, UnicodeError) as e:
            raise ApiError("source_unreachable", f"cannot resolve {host!r}: {e}") from None
        addrs: list[IpAddress] = []
        for family, _, _, _, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6):
                addrs.append(ipaddress.ip_address(str(sockaddr[0]).split("%")[0]))
        if not addrs:
            raise ApiError("source_unreachable", f"{host!r} has no IP address")
        return addrs

    async def pinned_address(self, url: str) -> IpAddress:
        """The address to pin for the URL's host: the first of its addresses, after checking that
        every one is allowed (``url_forbidden`` otherwise)."""
        parts = urlsplit(url)
        host = parts.hostname
        if not host:
            raise ApiError("url_forbidden", "URL has no host")
        try:
            port = parts.port
        except ValueError:
            raise ApiError("invalid_request", "URL has an invalid port") from None
        addrs = await self.resolve(host, port)
        for ip in addrs:
            if not self.address_allowed(ip):
                raise ApiError(
                    "url_forbidden",
                    f"{host} resolves to a non-public address ({ip}); not allowed by the URL policy",
                )
        return addrs[0]

    async def follow_redirects(self, url: str, address: IpAddress) -> CheckedSource:
        """Pre-flight an http(s) URL at its checked ``address`` with redirects off; check, pin and
        follow each ``Location``. Returns the final URL (not a redirect) and its pinned address."""
        current, ip = url, address
        async with httpx.AsyncClient(
            follow_redirects=False, timeout=self.timeout_s, verify=False, trust_env=False
        ) as client:
            for hop in range(self.max_redirects + 1):
                try:
                    target, hostport = pin_url(current, str(ip))
                except IngestError as e:  # a host that cannot go into a Host header
                    raise ApiError(e.code, e.message) from None
                headers = {"Range": "bytes=0-0", "Host": hostport}
                sni = {"sni_hostname": urlsplit(current).hostname or ""}
                try:
                    async with client.stream("GET", target, headers=headers, extensions=sni) as resp:
                        status = resp.status_code
                        location = resp.headers.get("location")
                except httpx.HTTPError as e:
                    raise ApiError("source_unreachable", f"cannot reach {hostport}: {e}") from None
                if status not in _REDIRECTS or not location:
                    return CheckedSource(current, str(ip))
                if hop == self.max_redirects:
                    break
                nxt = urljoin(current, location)
                if urlsplit(nxt).scheme.lower() not in ("http", "https"):
                    raise ApiError("url_forbidden", f"redirect to a non-http URL: {nxt[:200]}")
                current, ip = nxt, await self.pinned_address(nxt)
        raise ApiError("url_forbidden", f"more than {self.max_redirects} redirects")

    # -- entry point --------------------------------------------------------------------------

    async def check(self, url: str) -> CheckedSource:
        """What ingest should open for ``url`` (a resolved path, the URL or its redirect target,
        with its pinned address); ``url_forbidden`` / ``source_unreachable`` /
        ``unsupported_scheme`` otherwise."""
        try:
            src = parse_source_url(url)
        except Exception as e:  # IngestError; urlsplit's ValueError
            raise ApiError(getattr(e, "code", "unsupported_scheme"), getattr(e, "message", str(e))) from None
        if src.kind is SourceKind.FILE:
            return CheckedSource(self.check_file(src.target))
        if self.allow_private:
            return CheckedSource(src.url)
        ip = await self.pinned_address(src.url)
        if src.kind is SourceKind.HTTP:
            return await self.follow_redirects(src.url, ip)
        return CheckedSource(src.url, str(ip))
