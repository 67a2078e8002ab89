"""Live sources through the HTTP API: WHIP (aiortc publisher) and RTSP (GStreamer server)."""

from __future__ import annotations

import av
import httpx
import pytest

from .conftest import wait_until

pytest.importorskip("aiortc", reason="pip install aiortc")

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402
from aiortc.mediastreams import VideoStreamTrack  # noqa: E402

from streamvqa.workers.ingest.whip import loopback_ice  # noqa: E402
from tests.helpers import wait_until_async  # noqa: E402
from tests.ingest.media import index_image  # noqa: E402


class IndexTrack(VideoStreamTrack):
    """A synthetic 30 fps track (aiortc paces it); frame i shows i as bit-bars."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(index_image(self.count % 256, 160, 120), format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        self.count += 1
        return frame


async def _poll_stream(http: httpx.AsyncClient, sid: str, pred, timeout: float = 30.0) -> dict:
    """The stream's info once ``pred`` holds, else its last info (bounded)."""
    last: dict = {}

    async def info() -> dict | None:
        last.update((await http.get(f"/v1/streams/{sid}")).json())
        return dict(last) if pred(last) else None

    return await wait_until_async(info, timeout, 0.1) or dict(last)


async def test_whip_publish_through_http(live_server) -> None:
    with loopback_ice():
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver(IndexTrack(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        try:
            async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
                r = await http.post("/v1/whip", content=pc.localDescription.sdp)  # no content type
                assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
                r = await http.post("/v1/whip?fps=5", content=pc.localDescription.sdp,
                                    headers={"content-type": "application/sdp"})
                assert r.status_code == 201, r.text
                assert r.headers["content-type"].startswith("application/sdp")
                location = r.headers["location"]
                sid = location.rsplit("/", 1)[1]
                assert location == f"/v1/whip/{sid}"
                await pc.setRemoteDescription(RTCSessionDescription(sdp=r.text, type="answer"))
                info = await _poll_stream(http, sid, lambda s: s["frames_encoded"] >= 3)
                assert info["frames_encoded"] >= 3 and info["state"] == "running", info
                assert info["url"] == f"whip://{sid}"
                r = await http.post(f"/v1/streams/{sid}/questions", json={"question": "What is shown?", "max_tokens": 4})
                assert r.status_code == 200 and r.json()["evidence"], r.text
                assert (await http.patch(location)).status_code == 405
                # the publisher's DELETE ends the session; the stream stays, ended and answerable
                assert (await http.delete(location)).status_code == 200
                info = (await http.get(f"/v1/streams/{sid}")).json()
                assert info["state"] == "ended" and info["last_error"] is None, info
                r = await http.post(f"/v1/streams/{sid}/questions", json={"question": "What was shown?", "max_tokens": 2})
                assert r.status_code == 200 and r.json()["evidence"], r.text
                assert (await http.delete(location)).status_code == 200  # again: still ended
                assert (await http.get(f"/v1/streams/{sid}")).json()["state"] == "ended"
                assert (await http.delete(f"/v1/streams/{sid}")).status_code == 204  # the owner's delete
                assert (await http.get(f"/v1/streams/{sid}")).json()["error"]["code"] == "unknown_stream"
                assert (await http.delete(location)).json()["error"]["code"] == "unknown_stream"
        finally:
            await pc.close()


async def test_whip_offer_without_video(live_server) -> None:
    with loopback_ice():
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.createDataChannel("x")
        await pc.setLocalDescription(await pc.createOffer())
        try:
            async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
                r = await http.post("/v1/whip", content=pc.localDescription.sdp,
                                    headers={"content-type": "application/sdp"})
                assert r.status_code == 422 and r.json()["error"]["code"] == "no_video_stream"
                assert (await http.get("/v1/streams")).json() == {"streams": []}
        finally:
            await pc.close()


def test_rtsp_stream_answered_and_reconnects(make_client, rtsp_server_ctl) -> None:
    url = rtsp_server_ctl.start()
    client = make_client(max_retries=20, read_timeout_s=3.0, open_timeout_s=3.0)
    r = client.post("/v1/streams", json={"url": url, "fps": 2})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]

    def info() -> dict:
        return client.get(f"/v1/streams/{sid}").json()

    assert wait_until(lambda: info()["frames_encoded"] >= 3, 60), info()
    r = client.post(f"/v1/streams/{sid}/questions", json={"question": "What is on screen?", "max_tokens": 4})
    assert r.status_code == 200 and r.json()["evidence"], r.text

    rtsp_server_ctl.kill()  # crash mid-stream: the stream reconnects, visible in GET
    assert wait_until(lambda: info()["state"] == "reconnecting", 30), info()
    before = info()["frames_encoded"]
    rtsp_server_ctl.start()
    assert wait_until(lambda: info()["state"] == "running" and info()["frames_encoded"] > before + 2, 60), info()
    assert info()["reconnects"] >= 1
    assert client.delete(f"/v1/streams/{sid}").status_code == 204


def test_http_stream_answered(make_client, http_server: str, media_dir, clip) -> None:
    (media_dir / "server_clip.mp4").write_bytes(clip.read_bytes())
    client = make_client()
    r = client.post("/v1/streams", json={"url": f"{http_server}/server_clip.mp4", "fps": 5})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert wait_until(lambda: client.get(f"/v1/streams/{sid}").json()["state"] == "ended", 30)
    info = client.get(f"/v1/streams/{sid}").json()
    assert info["frames_encoded"] == 15 and info["last_error"] is None, info
    r = client.post(f"/v1/streams/{sid}/questions", json={"question": "Which number?", "max_tokens": 3})
    assert r.status_code == 200 and r.json()["evidence"]
    missing = f"{http_server}/missing.mp4"
    r = client.post("/v1/streams?probe=true", json={"url": missing})
    assert r.status_code == 422 and r.json()["error"]["code"] == "source_unreachable"
