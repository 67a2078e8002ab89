"""WHIP ingest: an aiortc publisher pushes a synthetic track over 127.0.0.1 to a WhipSession."""

from __future__ import annotations

import logging

import av
import pytest

pytest.importorskip("aiortc", reason="pip install aiortc")

import aioice.ice  # noqa: E402
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription  # noqa: E402
from aiortc.mediastreams import VideoStreamTrack  # noqa: E402

from streamvqa.workers.ingest import IngestError, IngestState  # noqa: E402
from streamvqa.workers.ingest.whip import WhipSession, loopback_ice  # noqa: E402
from tests.helpers import wait_until_async  # noqa: E402

from .helpers import CollectingSink  # noqa: E402
from .media import index_image, read_index  # noqa: E402

SEND_FPS = 30


class IndexTrack(VideoStreamTrack):
    """Frame i shows index i (mod 256) as bit-bars; aiortc paces it at 30 fps with 90 kHz pts."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(index_image(self.count % 256), format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        self.count += 1
        return frame


@pytest.fixture
def loopback():
    with loopback_ice():
        yield


async def publish(codec: str | None = None) -> tuple[RTCPeerConnection, IndexTrack, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    track = IndexTrack()
    transceiver = pc.addTransceiver(track, direction="sendonly")
    if codec:
        caps = RTCRtpSender.getCapabilities("video").codecs
        transceiver.setCodecPreferences([c for c in caps if c.mimeType == f"video/{codec}"])
    await pc.setLocalDescription(await pc.createOffer())
    return pc, track, pc.localDescription.sdp


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_whip_frames_reach_sink(loopback: None, codec: str) -> None:
    client, track, offer = await publish(codec)
    sink = CollectingSink()
    session = None
    try:
        session, answer = await WhipSession.create(offer, sink, fps=5.0, max_width=320, max_height=240)
        assert "a=candidate" in answer and "127.0.0.1" in answer
        assert session.state is IngestState.CONNECTING
        await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        assert await wait_until_async(lambda: len(sink) >= 6, timeout=30), session.stats()
        assert session.state is IngestState.RUNNING
    finally:
        if session is not None:
            await session.close()
        await client.close()
    assert session.state is IngestState.STOPPED
    frames = sink.snapshot()
    ts = [f.t for f in frames]
    assert ts[0] == pytest.approx(0.0) and ts == sorted(ts) and len(set(ts)) == len(ts)
    gaps = [b - a for a, b in zip(ts, ts[1:], strict=False)]
    assert all(0.19 <= g <= 2.0 for g in gaps), gaps  # sampled at 5 fps of stream time
    assert all(f.image.shape == (240, 320, 3) for f in frames)
    # content matches time: sender frame i has pts i/30 s, so index - 30 t is constant
    offsets = {round(read_index(f.image) - SEND_FPS * f.t) for f in frames if read_index(f.image) > 0}
    assert len(offsets) <= 2, offsets
    s = session.stats()
    assert s.frames_decoded >= s.frames_sampled >= len(frames) and s.frames_delivered == len(frames)


async def test_whip_rejects_offer_without_video(loopback: None) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel("x")
    await pc.setLocalDescription(await pc.createOffer())
    try:
        with pytest.raises(IngestError) as ei:
            await WhipSession.create(pc.localDescription.sdp, CollectingSink())
        assert ei.value.code == "no_video_stream"
        recv_only = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        recv_only.addTransceiver("video", direction="recvonly")  # wants to watch, not publish
        await recv_only.setLocalDescription(await recv_only.createOffer())
        await recv_only.close()
        with pytest.raises(IngestError) as ei:
            await WhipSession.create(recv_only.localDescription.sdp, CollectingSink())
        assert ei.value.code == "no_video_stream"
        with pytest.raises(IngestError) as ei:
            await WhipSession.create("v=0\r\nm=video garbage\r\n", CollectingSink())
        assert ei.value.code == "decode_error"
    finally:
        await pc.close()


async def test_whip_publisher_gone_fails_after_timeout(loopback: None) -> None:
    """An offer whose publisher never completes ICE: no frames -> failed/source_unreachable."""
    client, _track, offer = await publish()
    await client.close()
    session, _answer = await WhipSession.create(offer, CollectingSink(), connect_timeout_s=1.0)
    try:
        assert await session.wait(timeout=20)
        assert session.state is IngestState.FAILED
        assert session.last_error.code == "source_unreachable"
    finally:
        await session.close()


async def test_whip_publisher_hangs_up_ends_session(loopback: None) -> None:
    client, _track, offer = await publish()
    sink = CollectingSink()
    session, answer = await WhipSession.create(offer, sink, fps=2.0)
    try:
        await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        assert await wait_until_async(lambda: len(sink) >= 2, timeout=30), session.stats()
        await client.close()
        assert await session.wait(timeout=20), session.stats()
        assert session.state in (IngestState.ENDED, IngestState.FAILED)
        if session.state is IngestState.FAILED:  # ICE consent expiry instead of a DTLS close
            assert session.last_error.code == "source_unreachable"
    finally:
        await session.close()
        await client.close()


def _candidate_addresses(sdp: str) -> set[str]:
    return {line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")}


async def test_whip_ice_addresses_per_session() -> None:
    """The answer offers the addresses asked for (loopback included), only for that session."""
    client, _track, offer = await publish()
    sessions = []
    try:
        s1, answer = await WhipSession.create(offer, CollectingSink(), ice_addresses=["127.0.0.1"])
        sessions.append(s1)
        assert _candidate_addresses(answer) == {"127.0.0.1"}
        s2, answer = await WhipSession.create(offer, CollectingSink(), ice_addresses=["host", "127.0.0.1"])
        sessions.append(s2)
        host = set(aioice.ice.get_host_addresses(True, True))  # this machine's, loopback excluded
        assert _candidate_addresses(answer) == host | {"127.0.0.1"}
        s3, answer = await WhipSession.create(offer, CollectingSink())  # none given: aioice's own choice
        sessions.append(s3)
        assert "127.0.0.1" not in _candidate_addresses(answer)
    finally:
        for s in sessions:
            await s.close()
        await client.close()


async def test_whip_end_keeps_ended_and_logs_states(loopback: None, caplog: pytest.LogCaptureFixture) -> None:
    """The publisher's DELETE (``end``) leaves the session ``ended``, not ``stopped``; connection
    and ICE states are logged."""
    caplog.set_level(logging.INFO, logger="streamvqa.workers.ingest.whip")
    client, _track, offer = await publish()
    sink = CollectingSink()
    session, answer = await WhipSession.create(offer, sink, fps=2.0)
    try:
        await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        assert await wait_until_async(lambda: len(sink) >= 2, timeout=30), session.stats()
        await session.end()
        assert session.state is IngestState.ENDED and session.last_error is None
        await session.close()  # the owner's delete later: the final state stays
        assert session.state is IngestState.ENDED
    finally:
        await session.close()
        await client.close()
    text = caplog.text
    assert f"whip {session.id[:8]}: connection connected" in text and f"whip {session.id[:8]}: ICE completed" in text


async def test_whip_dtls_failure_is_logged_and_kept(loopback: None, caplog: pytest.LogCaptureFixture) -> None:
    """A DTLS failure (here: the offer's fingerprint is not the publisher's certificate) is a
    warning in the log and the reason in the session's last error (aiortc says it only at debug)."""
    caplog.set_level(logging.INFO, logger="streamvqa.workers.ingest.whip")
    client, _track, offer = await publish()
    lines = offer.splitlines()
    forged = [
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) if line.startswith("a=fingerprint:sha-256") else line
        for line in lines
    ]
    assert forged != lines
    session, answer = await WhipSession.create("\r\n".join(forged) + "\r\n", CollectingSink())
    try:
        await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        assert await session.wait(timeout=30), session.stats()
        assert session.state is IngestState.FAILED
        assert session.last_error.code == "source_unreachable"
        assert "DTLS handshake failed (fingerprint mismatch)" in session.last_error.message
    finally:
        await session.close()
        await client.close()
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "streamvqa.workers.ingest.whip"]
    assert any("DTLS handshake failed (fingerprint mismatch)" in r.getMessage() for r in warned), caplog.text
