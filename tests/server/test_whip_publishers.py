"""WHIP with other publishers and edge cases: FFmpeg's own muxer with its defaults, a stream the
model saw nothing in, and ``serve``'s loggers (WHIP states and DTLS failures must reach the log)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from streamvqa.engine import Engine, EngineConfig
from streamvqa.server.app import create_app
from streamvqa.server.main import BackgroundServer, configure_logging

from .conftest import lean_settings, wait_stream

pytest.importorskip("aiortc", reason="pip install aiortc")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_ffmpeg_whip_muxer_with_default_options(engine) -> None:
    """FFmpeg's muxer makes an ECDSA P-224 certificate by default (GnuTLS inside PyAV); the DTLS
    handshake needs the system OpenSSL (``workers/ingest/dtls_compat.py``)."""
    if "whip" not in av.formats_available:
        pytest.skip("this FFmpeg has no WHIP muxer")
    settings = lean_settings(host="127.0.0.1", port=0, log_level="warning", whip_ice_addresses=["127.0.0.1"])
    server = BackgroundServer(create_app(settings, engine=engine), settings).start()
    import httpx

    try:
        proc = subprocess.run([sys.executable, "-m", "tests.server.ffmpeg_whip", f"{server.url}/v1/whip?fps=2", "4"],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        with httpx.Client(base_url=server.url, timeout=30) as http:
            streams = http.get("/v1/streams").json()["streams"]
            assert proc.returncode == 0, (proc.stderr[-2000:], streams)
            assert len(streams) == 1, streams
            sid = streams[0]["id"]
            # the muxer's close is a WHIP DELETE: the stream stays, ended, with what it saw
            info = wait_stream(http, sid, lambda s: s["state"] == "ended" and s["frames_encoded"] >= 4)
            assert info["state"] == "ended" and info["frames_encoded"] >= 4 and info["last_error"] is None, info
            r = http.post(f"/v1/streams/{sid}/questions", json={"question": "What moved?", "max_tokens": 2})
            assert r.status_code == 200 and r.json()["evidence"], r.text
    finally:
        server.stop()


def _blank_clip(path: Path, seconds: int = 3, fps: int = 2) -> Path:
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = 128, 128, "yuv420p"
        for i in range(seconds * fps):
            frame = av.VideoFrame.from_ndarray(np.full((128, 128, 3), 110, np.uint8), format="rgb24")
            frame.pts = i
            for packet in st.encode(frame.reformat(format="yuv420p")):
                out.mux(packet)
        for packet in st.encode():
            out.mux(packet)
    return path


@pytest.mark.slow
def test_stream_that_showed_the_model_nothing_says_so(make_client, tmp_path: Path) -> None:
    """The default model gives a frame with nothing in it no tokens: frames seen and encoded,
    nothing stored. A question says that, not "no encoded frames yet"."""
    clip = _blank_clip(tmp_path / "blank.mp4")
    client = make_client(engine_override=Engine(EngineConfig(model="default", threads=1)), model="default",
                         media_root=str(tmp_path))
    sid = client.post("/v1/streams", json={"url": clip.name, "fps": 2}).json()["id"]
    info = wait_stream(client, sid, lambda s: s["state"] == "ended", timeout=120)
    assert info["frames_encoded"] == 6 and info["units_encoded"] == 0, info
    r = client.post(f"/v1/streams/{sid}/questions", json={"question": "What colour is the circle?"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "empty_stream", r.text
    message = r.json()["error"]["message"]
    assert "saw nothing" in message and "6 encoded frame" in message and "yet" not in message.split(":")[0], message


def test_serve_configures_the_app_loggers(monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve`` (CLI root at WARNING) still shows the app's INFO lines: WHIP connection states."""
    app_log = logging.getLogger("streamvqa")
    monkeypatch.setattr(app_log, "level", app_log.level)
    monkeypatch.setattr(app_log, "handlers", list(app_log.handlers))
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", logging.WARNING)
    whip_log = logging.getLogger("streamvqa.workers.ingest.whip")
    app_log.setLevel(logging.NOTSET)
    assert not whip_log.isEnabledFor(logging.INFO)  # as before: the CLI's WARNING root hid them
    configure_logging("info")
    assert whip_log.isEnabledFor(logging.INFO) and not whip_log.isEnabledFor(logging.DEBUG)
    configure_logging("warning")
    assert not whip_log.isEnabledFor(logging.INFO)
    configure_logging("trace")  # uvicorn's finest level
    assert whip_log.isEnabledFor(logging.DEBUG)


def test_whip_ice_addresses_setting() -> None:
    from streamvqa.server.settings import ServerSettings

    s = ServerSettings.from_env({"STREAMVQA_WHIP_ICE_ADDRESSES": "host, 127.0.0.1,::1"})
    assert s.whip_ice_addresses == ["host", "127.0.0.1", "::1"]
    assert ServerSettings.from_env({}).whip_ice_addresses == []
    with pytest.raises(ValueError, match="whip_ice_addresses: 'eth0' is not an IP address"):
        ServerSettings.from_env({"STREAMVQA_WHIP_ICE_ADDRESSES": "eth0"})
