"""RTSP ingest from a real GStreamer RTSP server on 127.0.0.1: both transports, crash and restart."""

from __future__ import annotations

import pytest

from streamvqa.workers.ingest import IngestConfig, IngestState, IngestWorker, probe_source

from .conftest import RtspServer
from .helpers import CollectingSink, wait_until


def rtsp_config(url: str, transport: str = "tcp", **kw) -> IngestConfig:
    base = dict(
        url=url,
        fps=5.0,
        rtsp_transport=transport,
        open_timeout_s=5,
        read_timeout_s=3,
        backoff_initial_s=0.2,
        backoff_max_s=1.0,
        max_retries=30,
    )
    base.update(kw)
    return IngestConfig(**base)


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_frames_arrive(rtsp_url: str, transport: str) -> None:
    sink = CollectingSink()
    worker = IngestWorker(rtsp_config(rtsp_url, transport), sink).start()
    try:
        assert wait_until(lambda: len(sink) >= 6, timeout=30), worker.stats()
        assert worker.state is IngestState.RUNNING
    finally:
        assert worker.stop()
    frames = sink.snapshot()
    ts = [f.t for f in frames]
    assert ts == sorted(ts) and len(set(ts)) == len(ts), ts
    assert ts[0] == pytest.approx(0.0, abs=1e-6)
    assert all(f.image.shape == (240, 320, 3) for f in frames)
    assert [f.index for f in frames] == list(range(len(frames)))
    # sampled at 5 fps of stream time from a 15 fps source: about 0.2 s apart
    gaps = [b - a for a, b in zip(ts, ts[1:], strict=False)]
    assert all(0.19 <= g <= 2.0 for g in gaps), gaps
    s = worker.stats()
    assert s.frames_decoded >= s.frames_sampled >= len(frames)
    assert s.state == "stopped"


def test_rtsp_probe(rtsp_url: str) -> None:
    info = probe_source(rtsp_config(rtsp_url))
    assert (info.kind, info.codec, info.width, info.height) == ("rtsp", "h264", 320, 240)


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_server_restart_reconnects(rtsp_server_ctl: RtspServer, transport: str) -> None:
    url = rtsp_server_ctl.start()
    sink = CollectingSink()
    worker = IngestWorker(rtsp_config(url, transport), sink).start()
    try:
        assert wait_until(lambda: len(sink) >= 3, timeout=30), worker.stats()
        rtsp_server_ctl.kill()
        assert wait_until(lambda: worker.state is IngestState.RECONNECTING, timeout=20), worker.stats()
        before = len(sink)
        rtsp_server_ctl.start()
        assert wait_until(lambda: len(sink) >= before + 3, timeout=40), worker.stats()
        assert worker.state is IngestState.RUNNING
        assert worker.reconnects >= 1
        hist = worker.state_history
        assert hist[:4] == ["connecting", "running", "reconnecting", "running"], hist
    finally:
        assert worker.stop()
    ts = [f.t for f in sink.snapshot()]
    assert ts == sorted(ts), "stream time stays monotonic across the reconnect"


def test_rtsp_server_gone_retries_exhausted(rtsp_server_ctl: RtspServer) -> None:
    url = rtsp_server_ctl.start()
    sink = CollectingSink()
    worker = IngestWorker(
        rtsp_config(url, max_retries=3, backoff_initial_s=0.1, backoff_max_s=0.2), sink
    ).start()
    try:
        assert wait_until(lambda: len(sink) >= 2, timeout=30), worker.stats()
        rtsp_server_ctl.kill()
        assert worker.wait(timeout=30)
    finally:
        worker.stop()
    assert worker.state is IngestState.FAILED
    assert worker.last_error.code == "retries_exhausted"
    assert "reconnecting" in worker.state_history


def test_stop_during_backoff_is_prompt(rtsp_server_ctl: RtspServer) -> None:
    """stop() while waiting out a long reconnect backoff returns in bounded time: ``stopped``."""
    url = rtsp_server_ctl.start()
    sink = CollectingSink()
    cfg = rtsp_config(url, backoff_initial_s=30, backoff_max_s=60, read_timeout_s=3)
    worker = IngestWorker(cfg, sink).start()
    try:
        assert wait_until(lambda: len(sink) >= 1, timeout=30), worker.stats()
        rtsp_server_ctl.kill()
        assert wait_until(lambda: worker.state is IngestState.RECONNECTING, timeout=20), worker.stats()
    finally:
        assert worker.stop(timeout=10)
    assert worker.state is IngestState.STOPPED
    assert worker.state_history[-2:] == ["reconnecting", "stopped"]


@pytest.mark.slow
def test_rtsp_looped_file_content_matches_time(gst_rtsp: None, media_dir) -> None:
    """A 4 s index clip served over RTSP in a loop: each sampled frame shows the frame for its t."""
    from .conftest import RtspServer, free_port
    from .media import read_index, write_index_mp4

    clip = write_index_mp4(media_dir / "index_4s_25fps.mp4", seconds=4.0, fps=25)
    server = RtspServer(free_port(), ["--file", str(clip)])
    try:
        url = server.start()
        sink = CollectingSink()
        worker = IngestWorker(rtsp_config(url, fps=2.0), sink).start()
        try:
            assert wait_until(lambda: len(sink) >= 14, timeout=40), worker.stats()  # > 1 loop
        finally:
            assert worker.stop()
    finally:
        server.close()
    frames = sink.snapshot()
    ts = [f.t for f in frames]
    assert ts == sorted(ts) and ts[-1] > 4.0
    shown = [read_index(f.image) for f in frames]
    start = shown[0]
    # frame k of the clip is at k/25 s; the loop restarts at 100 frames
    expected = [(start + round(t * 25)) % 100 for t in ts]
    assert all(abs(a - b) <= 1 or abs(a - b) >= 99 for a, b in zip(shown, expected, strict=True)), (
        shown,
        expected,
    )
    assert any(b < a for a, b in zip(shown, shown[1:], strict=False)), "the clip looped"
