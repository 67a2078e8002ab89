"""RTSP ingest starts at the first keyframe the server sends and reports its time base (issue 17,
item 8): with ``fflags=nobuffer`` the packets read while probing were thrown away, the first
keyframe among them, so decoding began one keyframe interval late and stream time 0 sat there."""

from __future__ import annotations

import pytest

from streamvqa.workers.ingest import IngestWorker
from streamvqa.workers.ingest.timebase import map_time

from .conftest import RtspServer, free_port
from .helpers import CollectingSink, wait_until
from .media import read_index, write_index_mp4
from .test_rtsp_ingest import rtsp_config

FPS = 15
GOP = 150  # one keyframe every 10 s: a lost first interval shows as frames from index 150 on


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory):
    return write_index_mp4(tmp_path_factory.mktemp("rtsp_gop") / "index_15s.mp4", seconds=15.0, fps=FPS)


@pytest.fixture
def long_gop_server(gst_rtsp: None, long_clip) -> RtspServer:
    ctl = RtspServer(free_port(), ["--file", str(long_clip), "--gop", str(GOP)])
    try:
        yield ctl
    finally:
        ctl.close()


@pytest.mark.slow
def test_rtsp_decoding_starts_at_the_first_keyframe(long_gop_server: RtspServer) -> None:
    url = long_gop_server.start()
    sink = CollectingSink()
    worker = IngestWorker(rtsp_config(url, fps=5), sink).start()
    try:
        assert wait_until(lambda: len(sink) >= 6, timeout=40), worker.stats()
    finally:
        assert worker.stop()
    frames = sink.snapshot()[:6]
    shown = [read_index(f.image) for f in frames]
    # the server's stream starts at the clip's frame 0, a keyframe: nothing before it is lost
    assert shown[0] == 0, shown
    assert frames[0].t == pytest.approx(0.0, abs=1e-6)
    # stream time 0 is that keyframe, and stream time follows the source: t = index / fps
    assert all(abs(f.t - i / FPS) <= 1.5 / FPS for f, i in zip(frames, shown, strict=True)), (
        [(f.t, i) for f, i in zip(frames, shown, strict=True)])
    tb = worker.stats().time_base
    assert tb is not None and tb["segments"], tb
    assert tb["source_pts_at_zero"] == pytest.approx(0.0, abs=1.5 / FPS)  # RTP time of the first packet
    assert tb["wall_clock_at_zero"] is not None
    src, wall = map_time(tb, 1.0)
    assert src == pytest.approx(tb["source_pts_at_zero"] + 1.0)
    assert wall == pytest.approx(tb["wall_clock_at_zero"] + 1.0)
