"""Opening RTSP/HTTP/file sources with PyAV, decoding them, and classifying what goes wrong."""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import av
import av.error

from .config import IngestConfig
from .errors import IngestError
from .tunnel import ConnectTunnel
from .urls import SourceKind, SourceUrl

log = logging.getLogger(__name__)

#: Consecutive undecodable packets after which a stream is declared broken (``decode_error``).
MAX_CONSECUTIVE_DECODE_ERRORS = 50

_UNREACHABLE_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ETIMEDOUT,
    errno.ENOENT,
    errno.EACCES,
    errno.EPERM,
    errno.EIO,
    errno.EPIPE,
}


class StreamInterrupted(Exception):
    """Reading the source failed after it had opened (network drop, read timeout, damaged file)."""


def container_options(config: IngestConfig, kind: SourceKind) -> dict[str, str]:
    """FFmpeg demuxer/protocol options for ``kind`` (all values are strings, times in microseconds)."""
    read_us = str(int(config.read_timeout_s * 1_000_000))
    if kind is SourceKind.RTSP:
        # FFmpeg >= 5 (av 18 ships FFmpeg 8): ``timeout`` is the RTSP socket I/O timeout in
        # microseconds; the old ``stimeout`` option no longer exists. No ``fflags=nobuffer``: it
        # discards the packets read while probing (up to ``analyzeduration``), the first keyframe
        # among them, so decoding would start one keyframe interval late (issue 17, item 8).
        return {
            "rtsp_transport": config.rtsp_transport,
            "timeout": read_us,
            "flags": "low_delay",
            "analyzeduration": "1000000",
        }
    if kind is SourceKind.HTTP:
        # ``rw_timeout``: generic protocol read/write timeout (microseconds).
        return {"rw_timeout": read_us}
    return {}


@dataclass
class OpenedSource:
    """An open container and its first video stream (and the CONNECT tunnel it reads through)."""

    source: SourceUrl
    container: av.container.InputContainer
    stream: av.video.stream.VideoStream
    tunnel: ConnectTunnel | None = None

    @property
    def codec_name(self) -> str:
        return self.stream.codec_context.name

    def close(self) -> None:
        try:
            self.container.close()
        except Exception:  # closing a broken network container may raise; nothing to do
            log.debug("closing %s failed", self.source.url, exc_info=True)
        if self.tunnel is not None:
            self.tunnel.close()


def classify_open_error(exc: BaseException, source: SourceUrl) -> IngestError:
    """Map an exception raised while opening ``source`` to a stable :class:`IngestError`."""
    if isinstance(exc, IngestError):
        return exc
    msg = f"{source.url}: {exc}"
    if isinstance(exc, av.error.ProtocolNotFoundError):
        return IngestError("unsupported_scheme", msg)
    if isinstance(exc, av.error.DecoderNotFoundError):
        return IngestError("unsupported_codec", msg)
    if isinstance(exc, av.error.InvalidDataError):
        if source.kind is SourceKind.RTSP:  # a garbled RTSP answer: the server is not usable
            return IngestError("source_unreachable", msg)
        return IngestError("decode_error", msg)
    if isinstance(exc, av.error.HTTPError | av.error.ExitError | av.error.TimeoutError):
        return IngestError("source_unreachable", msg)
    if isinstance(exc, OSError) and (exc.errno in _UNREACHABLE_ERRNOS or source.kind.is_network):
        return IngestError("source_unreachable", msg)
    if source.kind.is_network:
        return IngestError("source_unreachable", msg)
    return IngestError("decode_error", msg)


def open_source(config: IngestConfig) -> OpenedSource:
    """Open ``config.url`` and select its first video stream; raise :class:`IngestError` on failure."""
    source = config.source
    options = {**container_options(config, source.kind), **source.options}  # source.options: DNS pinning
    tunnel = None
    try:
        if source.tunnel is not None:  # a pinned https name: FFmpeg connects through the tunnel
            tunnel = ConnectTunnel(source.tunnel, config.open_timeout_s)
            options["http_proxy"] = tunnel.proxy_url
        container = av.open(source.target, options=options, timeout=(config.open_timeout_s, config.read_timeout_s))
    except Exception as e:  # PyAV raises FFmpegError subclasses, OSError, sometimes ValueError
        if tunnel is not None:
            tunnel.close()
        raise classify_open_error(e, source) from e
    try:
        stream = _video_stream(config, source, container)
    except Exception as e:
        container.close()
        if tunnel is not None:
            tunnel.close()
        raise classify_open_error(e, source) from e
    return OpenedSource(source, container, stream, tunnel)


def _video_stream(
    config: IngestConfig, source: SourceUrl, container: av.container.InputContainer
) -> av.video.stream.VideoStream:
    """The first video stream, checked to be decodable and within the size limits."""
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise IngestError("no_video_stream", f"{source.url}: no video stream (streams: {', '.join(kinds)})")
    stream = container.streams.video[0]
    ctx = stream.codec_context
    if ctx is None or ctx.codec is None or not ctx.codec.is_decoder:
        raise IngestError("unsupported_codec", f"{source.url}: no decoder for the video stream")
    if ctx.width > config.max_decode_width or ctx.height > config.max_decode_height:
        raise IngestError(
            "resolution_too_large",
            f"{source.url}: {ctx.width}x{ctx.height} exceeds "
            f"{config.max_decode_width}x{config.max_decode_height}",
        )
    if source.kind is not SourceKind.RTSP:
        ctx.thread_type = "AUTO"  # frame threading: faster, a few frames of latency
    return stream


def read_frames(
    opened: OpenedSource,
    should_stop: Callable[[], bool] = lambda: False,
    on_decode_error: Callable[[], None] = lambda: None,
) -> Iterator[av.VideoFrame]:
    """Yield decoded frames until the source ends (return) or breaks.

    Raises:
        StreamInterrupted: reading failed (drop, timeout, damaged data in the container).
        IngestError: ``decode_error`` after :data:`MAX_CONSECUTIVE_DECODE_ERRORS` bad packets in a row.

    Single undecodable packets are skipped and reported through ``on_decode_error``.
    """
    stream = opened.stream
    packets = opened.container.demux(stream)
    bad_in_a_row = 0
    while not should_stop():
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.error.EOFError:
            return
        except (av.error.FFmpegError, OSError) as e:
            raise StreamInterrupted(f"{opened.source.url}: {e}") from e
        try:
            frames = stream.decode(packet)
        except (av.error.FFmpegError, ValueError) as e:
            bad_in_a_row += 1
            on_decode_error()
            log.debug("undecodable packet in %s: %s", opened.source.url, e)
            if bad_in_a_row >= MAX_CONSECUTIVE_DECODE_ERRORS:
                raise IngestError(
                    "decode_error", f"{opened.source.url}: {bad_in_a_row} undecodable packets in a row: {e}"
                ) from e
            continue
        bad_in_a_row = 0
        yield from frames
