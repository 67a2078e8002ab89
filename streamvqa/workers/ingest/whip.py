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
import logging
import uuid
from collections.abc import Iterator

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .delivery import FrameDelivery, Sink
from .errors import IngestError
from .pipeline import FramePipeline
from .sampler import RgbConverter
from .stats import IngestCounters, IngestState, IngestStats

log = logging.getLogger(__name__)

_original_get_host_addresses = aioice.ice.get_host_addresses


def set_ice_host_addresses(addresses: list[str] | None) -> None:
    """Restrict ICE host candidates to ``addresses`` process-wide (None restores aioice's default).

    aioice never offers 127.0.0.1 on its own; tests and single-machine demos use
    ``set_ice_host_addresses(["127.0.0.1"])`` so that both peers meet on loopback.
    """
    if addresses is None:
        aioice.ice.get_host_addresses = _original_get_host_addresses
    else:
        fixed = list(addresses)
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: list(fixed)


@contextlib.contextmanager
def loopback_ice() -> Iterator[None]:
    """Context manager: ICE host candidates on 127.0.0.1 only (restored on exit)."""
    previous = aioice.ice.get_host_addresses
    set_ice_host_addresses(["127.0.0.1"])
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = previous


class WhipSession:
    """One WHIP publisher: an aiortc peer connection whose video track feeds ``sink``.

    State: ``connecting`` (SDP answered, no frame yet) -> ``running`` (frames flowing) ->
    ``ended`` (the publisher ended the track / closed the connection), ``failed`` (ICE/DTLS
    failure, no frame within ``connect_timeout_s``: code ``source_unreachable``) or ``stopped``
    (:meth:`close` was called).
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
    ) -> tuple[WhipSession, str]:
        """Accept a WHIP offer; return the session and the SDP answer (the ``201`` body).

        Raises :class:`IngestError`: ``decode_error`` for an SDP that cannot be parsed,
        ``no_video_stream`` for an offer without video, ``unsupported_codec`` when no offered
        video codec is supported. ``ice_servers`` defaults to none (host candidates only; no
        public STUN server is contacted).
        """
        if fps <= 0:
            raise ValueError("fps must be > 0")
        if "m=video" not in offer_sdp:
            raise IngestError("no_video_stream", "the WHIP offer has no video media section")
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

    async def close(self) -> None:
        """End the session (WHIP ``DELETE``): close the peer connection and the delivery thread."""
        if self._closed:
            return
        self._closed = True
        self._set_state(IngestState.STOPPED)
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

    async def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        log.info("whip %s: connection %s", self.id[:8], state)
        if state == "failed":
            self._set_state(IngestState.FAILED, IngestError("source_unreachable", "WebRTC connection failed"))
        elif state == "closed" and not self._closed:
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
