"""WebRTC ingest over WHIP (RFC 9725) with aiortc.

The HTTP layer owns the WHIP endpoint (``POST /v1/whip`` with ``application/sdp`` ->
``201 Created`` + ``Location``; ``DELETE`` the location to end). It delegates the media side to
:class:`WhipSession`::

    session, answer_sdp = await WhipSession.create(offer_sdp, sink, fps=1.0)
    ...                        # session.state, session.stats(), session.last_error
    await session.close()      # on DELETE

Received video frames go through the same :class:`~.pipeline.FramePipeline` (stream time from
the track's pts/time_base, sampling at ``fps``, one reformatter) and the same drop-oldest
:class:`~.delivery.FrameDelivery` as the PyAV worker, so counters and backpressure are identical.

aiortc is an optional dependency (``pip install aiortc``); it is imported when this module is.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import uuid
from collections.abc import Iterator

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from . import dtls_compat
from .delivery import FrameDelivery, Sink
from .errors import IngestError
from .pipeline import FramePipeline
from .sampler import RgbConverter
from .stats import IngestCounters, IngestState, IngestStats

log = logging.getLogger(__name__)
dtls_compat.install()  # FFmpeg's default publisher certificate (P-224): see dtls_compat

_original_get_host_addresses = aioice.ice.get_host_addresses

#: the ICE addresses of the session being created (``WhipSession.create(ice_addresses=...)``);
#: aioice gathers inside ``setLocalDescription``, in the creating task, so a context variable
#: scopes them to one session without touching the others
_session_addresses: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("whip_ice", default=None)
#: the session whose peer connection runs in this context (aiortc's tasks inherit it): DTLS
#: failures, which aiortc only logs at debug level, are logged and kept as that session's error
_current_session: contextvars.ContextVar[WhipSession | None] = contextvars.ContextVar("whip_session", default=None)


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """``host`` (this machine's addresses, loopback excluded: aioice's own choice) and literal IPs."""
    wanted = _session_addresses.get()
    if wanted is None:
        return _global_addresses(use_ipv4, use_ipv6)
    out: list[str] = []
    for a in wanted:
        for x in (_original_get_host_addresses(use_ipv4, use_ipv6) if a == "host" else [a]):
            if x not in out:
                out.append(x)
    return out


_global_addresses = _original_get_host_addresses
aioice.ice.get_host_addresses = _host_addresses


def set_ice_host_addresses(addresses: list[str] | None) -> None:
    """Restrict ICE host candidates to ``addresses`` process-wide (None restores aioice's default);
    a session's own ``ice_addresses`` take precedence.

    aioice never offers 127.0.0.1 on its own; tests and single-machine demos use
    ``set_ice_host_addresses(["127.0.0.1"])`` so that both peers meet on loopback.
    """
    global _global_addresses
    if addresses is None:
        _global_addresses = _original_get_host_addresses
    else:
        fixed = list(addresses)
        _global_addresses = lambda use_ipv4, use_ipv6: list(fixed)  # noqa: E731


class _DtlsFailureLog(logging.Filter):
    """aiortc reports why a DTLS handshake failed only at debug level; raise it to a warning of
    the session it belongs to and keep it as the reason the session failed."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "handshake failed" in text:
            session = _current_session.get()
            reason = text.split(" x ", 1)[-1]
            if session is not None:
                session.dtls_failure = reason
            log.warning("whip %s: %s", session.id[:8] if session else "?", reason)
            return False
        return record.levelno >= logging.getLogger("aiortc").getEffectiveLevel()


_dtls_logger = logging.getLogger("aiortc.rtcdtlstransport")
if _dtls_logger.level == logging.NOTSET:  # nobody asked for its debug lines: only the failures pass
    _dtls_logger.setLevel(logging.DEBUG)
    _dtls_logger.addFilter(_DtlsFailureLog())


@contextlib.contextmanager
def loopback_ice() -> Iterator[None]:
    """Context manager: ICE host candidates on 127.0.0.1 only (restored on exit)."""
    global _global_addresses
    previous = _global_addresses
    set_ice_host_addresses(["127.0.0.1"])
    try:
        yield
    finally:
        _global_addresses = previous


class WhipSession:
    """One WHIP publisher: an aiortc peer connection whose video track feeds ``sink``.

    State: ``connecting`` (SDP answered, no frame yet) -> ``running`` (frames flowing) ->
    ``ended`` (the publisher ended the track / closed the connection, or :meth:`end` on its
    WHIP ``DELETE``), ``failed`` (ICE/DTLS failure, no frame within ``connect_timeout_s``: code
    ``source_unreachable``) or ``stopped`` (:meth:`close` was called).
    """

    def __init__(
        self,
        pc: RTCPeerConnection,
        sink: Sink,
        fps: float,
        queue_size: int,
        converter: RgbConverter,
        connect_timeout_s: float,
        session_id: str,
    ) -> None:
        self.id = session_id
        self.pc = pc
        self._counters = IngestCounters()
        self._delivery = FrameDelivery(
            sink, queue_size, self._counters, name=f"whip-{session_id[:8]}"
        ).start()
        self._pipeline = FramePipeline(fps, converter, self._delivery, self._counters)
        self._connect_timeout_s = connect_timeout_s
        self._tasks: set[asyncio.Task[None]] = set()
        self._video_seen = False
        self._closed = False
        self._done = asyncio.Event()
        self._pc_closing: asyncio.Future[None] | None = None
        self.dtls_failure: str | None = None  # set by _DtlsFailureLog

    @classmethod
    async def create(
        cls,
        offer_sdp: str,
        sink: Sink,
        fps: float = 1.0,
        *,
        queue_size: int = 8,
        max_width: int = 1280,
        max_height: int = 720,
        max_decode_width: int = 7680,
        max_decode_height: int = 4320,
        ice_servers: list[RTCIceServer] | None = None,
        connect_timeout_s: float = 30.0,
        session_id: str | None = None,
        ice_addresses: list[str] | None = None,
    ) -> tuple[WhipSession, str]:
        """Accept a WHIP offer; return the session and the SDP answer (the ``201`` body).

        Raises :class:`IngestError`: ``decode_error`` for an SDP that cannot be parsed,
        ``no_video_stream`` for an offer without video, ``unsupported_codec`` when no offered
        video codec is supported. ``ice_servers`` defaults to none (host candidates only; no
        public STUN server is contacted). ``ice_addresses``: the host candidates the answer
        offers (IPs, ``host`` for this machine's own; None: the process-wide choice).
        """
        if fps <= 0:
            raise ValueError("fps must be > 0")
        if "m=video" not in offer_sdp:
            raise IngestError("no_video_stream", "the WHIP offer has no video media section")
        addresses = _session_addresses.set(list(ice_addresses) if ice_addresses else None)
        try:
            return await cls._create(offer_sdp, sink, fps, queue_size, max_width, max_height, max_decode_width,
                                     max_decode_height, ice_servers, connect_timeout_s, session_id)
        finally:
            _session_addresses.reset(addresses)

    @classmethod
    async def _create(cls, offer_sdp: str, sink: Sink, fps: float, queue_size: int, max_width: int,
                      max_height: int, max_decode_width: int, max_decode_height: int,
                      ice_servers: list[RTCIceServer] | None, connect_timeout_s: float,
                      session_id: str | None) -> tuple[WhipSession, str]:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=list(ice_servers or [])))
        session = cls(
            pc,
            sink,
            fps,
            queue_size,
            RgbConverter(max_width, max_height, max_decode_width, max_decode_height),
            connect_timeout_s,
            session_id or uuid.uuid4().hex,
        )
        pc.on("track", session._on_track)
        pc.on("connectionstatechange", session._on_connection_state)
        pc.on("iceconnectionstatechange", session._on_ice_state)
        current = _current_session.set(session)  # aiortc's tasks, started below, inherit it
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except Exception as e:
            await session.close()
            text = str(e)
            if "codec" in text.lower():
                raise IngestError("unsupported_codec", f"WHIP offer: {text}") from e
            raise IngestError("decode_error", f"invalid WHIP offer: {type(e).__name__}: {text}") from e
        finally:
            _current_session.reset(current)
        if not any(
            t.kind == "video" and t.currentDirection in ("recvonly", "sendrecv") for t in pc.getTransceivers()
        ):
            await session.close()
            raise IngestError("no_video_stream", "the WHIP offer does not send video")
        session._spawn(session._watchdog())
        return session, pc.localDescription.sdp

    # -- public API ---------------------------------------------------------------------------

    @property
    def state(self) -> IngestState:
        return self._counters.state

    @property
    def last_error(self) -> IngestError | None:
        return self._counters.last_error

    def stats(self) -> IngestStats:
        return self._counters.snapshot()

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until the session reaches a final state; True if it did within ``timeout``."""
        try:
            await asyncio.wait_for(self._done.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def end(self) -> None:
        """The publisher's WHIP ``DELETE``: stop receiving, state ``ended`` (unless already final)."""
        await self.close(IngestState.ENDED)

    async def close(self, final: IngestState = IngestState.STOPPED) -> None:
        """Stop receiving: close the peer connection and the delivery thread; the state becomes
        ``final`` unless it already was final. A second call does nothing."""
        if self._closed:
            return
        self._closed = True
        self._set_state(final)
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        await self._close_pc()
        for task in list(self._tasks):
            if task is not current:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await asyncio.to_thread(self._delivery.close, 2.0)

    # -- internals ----------------------------------------------------------------------------

    def _set_state(self, state: IngestState, error: IngestError | None = None) -> None:
        self._counters.set_state(state, error)
        if self._counters.state.is_final:
            self._done.set()

    async def _close_pc(self) -> None:
        """Close the peer connection once; concurrent callers share one close (aiortc's close
        must not be cancelled half-way and then called again)."""
        if self._pc_closing is None:
            self._pc_closing = asyncio.ensure_future(self.pc.close())
        await asyncio.shield(self._pc_closing)

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "video" or self._video_seen:
            return  # audio is ignored; one video track per session
        self._video_seen = True
        self._spawn(self._consume(track))

    async def _on_ice_state(self) -> None:
        log.info("whip %s: ICE %s", self.id[:8], self.pc.iceConnectionState)

    async def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        if state == "failed":
            why = f" ({self.dtls_failure})" if self.dtls_failure else ""
            log.warning("whip %s: connection failed%s", self.id[:8], why)
            self._set_state(IngestState.FAILED, IngestError("source_unreachable", f"WebRTC connection failed{why}"))
            return
        log.info("whip %s: connection %s", self.id[:8], state)
        if state == "closed" and not self._closed:
            self._set_state(IngestState.ENDED)

    async def _consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                self._set_state(IngestState.ENDED)  # the publisher ended the track
                return
            pts_s = None
            if frame.pts is not None and frame.time_base is not None:
                pts_s = float(frame.pts * frame.time_base)
            try:
                self._pipeline.push(frame, pts_s)
            except IngestError as e:
                self._set_state(IngestState.FAILED, e)
                await self._close_pc()
                return
            if self._counters.state is IngestState.CONNECTING:
                self._set_state(IngestState.RUNNING)

    async def _watchdog(self) -> None:
        await asyncio.sleep(self._connect_timeout_s)
        if self._counters.frames_decoded == 0 and not self._counters.state.is_final:
            self._set_state(
                IngestState.FAILED,
                IngestError("source_unreachable", f"no video frame within {self._connect_timeout_s:g} s"),
            )
            await self._close_pc()
