"""An ingest that continues a stream after an encoder restart (issue 17, item 6): a finite source
is seeked to the last acknowledged time instead of being read (at real time) from its start,
its frames and times equal an undisturbed run's after that point, and the state says
`recovering` until the first new frame; a live source continues after that time."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamvqa.workers.ingest import IngestConfig, IngestState, IngestWorker

from .conftest import RtspServer
from .helpers import CollectingSink, wait_until
from .media import read_index, write_index_ts_vfr
from .test_rtsp_ingest import rtsp_config


def run(url: str, fps: float, resume_after: float | None = None, **kw) -> tuple[IngestWorker, list]:
    sink = CollectingSink()
    cfg = IngestConfig(url=url, fps=fps, queue_size=1000, **kw)
    worker = IngestWorker(cfg, sink, resume_after=resume_after).start()
    try:
        assert worker.wait(timeout=60), worker.stats()
    finally:
        worker.stop()
    return worker, sink.snapshot()


def shown(frames: list) -> list[tuple[int, float]]:
    return [(read_index(f.image), round(f.t, 6)) for f in frames]


def test_paced_file_resumes_at_the_acknowledged_time(h264_mp4: Path) -> None:
    """10 s at 25 fps (a keyframe a second), paced: resumed after 8 s, only the rest is decoded."""
    _, full = run(str(h264_mp4), 2.0)
    worker, frames = run(str(h264_mp4), 2.0, resume_after=8.0, realtime=True)
    assert shown(frames) == [x for x in shown(full) if x[1] > 8.0]
    assert worker.state_history == ["connecting", "recovering", "running", "ended"]
    # seeked to the keyframe at 8 s: the 200 frames before it were not decoded (nor paced) again
    assert worker.frames_decoded <= 2 * 25 + 1, worker.stats()
    tb = worker.stats().time_base
    seg = tb["segments"][0]  # starts at the first frame decoded after 8 s
    assert len(tb["segments"]) == 1 and 8.0 < seg["t"] <= frames[0].t
    assert seg["source_pts"] == pytest.approx(seg["t"]) and tb["source_pts_at_zero"] == 0.0  # pts start at 0
    assert tb["segments"][0]["wall_clock"] is not None  # paced: frames are tied to the wall clock


def test_http_file_resumes_by_seeking(h264_mp4: Path, http_server: str) -> None:
    url = f"{http_server}/{h264_mp4.name}"
    _, full = run(url, 1.0)
    worker, frames = run(url, 1.0, resume_after=6.0)
    assert shown(frames) == [x for x in shown(full) if x[1] > 6.0]
    assert worker.frames_decoded <= 4 * 25 + 1, worker.stats()  # from the keyframe at 6 s


def test_resume_keeps_the_source_times_of_a_stream_not_starting_at_zero(tmp_path: Path) -> None:
    """MPEG-TS whose pts start at 100 s: stream time stays pts - 100 s after the resume."""
    ts = write_index_ts_vfr(tmp_path / "far.ts", [i * 0.1 for i in range(60)], start_s=100.0)
    _, full = run(str(ts), 5.0)
    worker, frames = run(str(ts), 5.0, resume_after=3.0)
    assert frames and shown(frames) == [x for x in shown(full) if x[1] > 3.0 + 1e-6]
    tb = worker.stats().time_base
    assert tb["source_pts_at_zero"] == pytest.approx(100.0, abs=1e-3)
    assert tb["wall_clock_at_zero"] is None  # decoded as fast as possible: no wall clock


def test_live_source_continues_after_the_acknowledged_time(rtsp_server_ctl: RtspServer) -> None:
    url = rtsp_server_ctl.start()
    sink = CollectingSink()
    worker = IngestWorker(rtsp_config(url), sink, resume_after=30.0)
    assert worker.state is IngestState.RECOVERING
    worker.start()
    try:
        assert wait_until(lambda: len(sink) >= 3, timeout=30), worker.stats()
    finally:
        assert worker.stop()
    ts = [f.t for f in sink.snapshot()]
    assert ts[0] == pytest.approx(30.0 + 1 / 5.0) and ts == sorted(ts)
    assert worker.state_history[:3] == ["connecting", "recovering", "running"]
