"""File and HTTP ingest of a real H.264 MP4: exactly which frames are sampled, and a clean end."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from streamvqa.workers.ingest import IngestConfig, IngestState, IngestWorker, probe_source

from .helpers import CollectingSink
from .media import HEIGHT, WIDTH, read_index

SOURCE_FPS = 25
N_FRAMES = 250


def expected_indices(fps: float) -> list[int]:
    """The first source frame at or after each sampling instant k/fps (frame i is at i/25 s)."""
    out = []
    k = 0
    while True:
        i = math.ceil(k / fps * SOURCE_FPS - 1e-9)
        if i >= N_FRAMES:
            return out
        out.append(i)
        k += 1


def run_to_end(url: str, fps: float, **kw) -> tuple[IngestWorker, list]:
    sink = CollectingSink()
    worker = IngestWorker(IngestConfig(url=url, fps=fps, queue_size=1000, **kw), sink).start()
    try:
        assert worker.wait(timeout=60), "worker did not finish"
    finally:
        worker.stop()
    return worker, sink.snapshot()


@pytest.mark.parametrize("fps", [1.0, 2.0])
def test_file_sampling_exact(h264_mp4: Path, fps: float) -> None:
    worker, frames = run_to_end(str(h264_mp4), fps)
    want = expected_indices(fps)
    assert len(want) == {1.0: 10, 2.0: 20}[fps]
    assert [f.index for f in frames] == list(range(len(want)))
    assert [round(f.t, 6) for f in frames] == [round(i / SOURCE_FPS, 6) for i in want]
    assert [read_index(f.image) for f in frames] == want  # the RIGHT frames arrived
    for f in frames:
        assert f.image.dtype == np.uint8 and f.image.shape == (HEIGHT, WIDTH, 3)
    assert worker.state is IngestState.ENDED
    s = worker.stats()
    assert s.state == "ended" and s.last_error is None
    assert s.frames_decoded == N_FRAMES
    assert s.frames_sampled == s.frames_delivered == len(want)
    assert s.frames_dropped_total == 0
    assert worker.state_history == ["connecting", "running", "ended"]


def test_file_url_and_downscale(h264_mp4: Path) -> None:
    worker, frames = run_to_end(h264_mp4.as_uri(), 1.0, max_width=160, max_height=160)
    assert len(frames) == 10
    assert frames[0].image.shape == (120, 160, 3)  # 320x240 fitted into 160x160, aspect kept
    assert [read_index(f.image) for f in frames] == expected_indices(1.0)
    assert worker.state is IngestState.ENDED


def test_http_ingest_same_frames(h264_mp4: Path, http_server: str) -> None:
    url = f"{http_server}/{h264_mp4.name}"
    worker, frames = run_to_end(url, 2.0)
    assert [read_index(f.image) for f in frames] == expected_indices(2.0)
    assert [round(f.t, 6) for f in frames] == [round(i / SOURCE_FPS, 6) for i in expected_indices(2.0)]
    assert worker.state is IngestState.ENDED


def test_probe_file(h264_mp4: Path) -> None:
    info = probe_source(IngestConfig(url=str(h264_mp4)))
    assert (info.codec, info.width, info.height, info.kind) == ("h264", WIDTH, HEIGHT, "file")


def test_realtime_pacing_still_delivers(h264_mp4: Path) -> None:
    """realtime=True paces by timestamps; stop() ends it promptly and state says stopped."""
    sink = CollectingSink()
    worker = IngestWorker(IngestConfig(url=str(h264_mp4), fps=4.0, realtime=True), sink).start()
    try:
        from .helpers import wait_until

        assert wait_until(lambda: len(sink) >= 2, timeout=20)
    finally:
        assert worker.stop()
    assert worker.state is IngestState.STOPPED
    assert worker.frames_decoded < N_FRAMES


def test_http_drop_reconnects_and_resumes(h264_mp4: Path, flaky_http_server: str) -> None:
    """The first HTTP response is cut halfway: the worker reconnects, seeks back, and ingests
    every frame exactly once (same frames, same timestamps as an undisturbed run)."""
    url = f"{flaky_http_server}/{h264_mp4.name}"
    worker, frames = run_to_end(url, 2.0, backoff_initial_s=0.05, read_timeout_s=5)
    assert worker.reconnects == 1, worker.stats()
    assert worker.state_history == ["connecting", "running", "reconnecting", "running", "ended"]
    assert [read_index(f.image) for f in frames] == expected_indices(2.0)
    assert [round(f.t, 6) for f in frames] == [round(i / SOURCE_FPS, 6) for i in expected_indices(2.0)]


def test_ended_file_stream_reports_no_encode_lag(h264_mp4):
    """fps sampling skips the tail frames of the file; they are not waiting for the encoder."""
    from streamvqa.workers.ingest import IngestConfig, IngestWorker

    got = []
    worker = IngestWorker(IngestConfig(url=str(h264_mp4), fps=1.0, queue_size=64), got.append).start()
    assert worker.wait(60)
    stats = worker.stats()
    assert stats.state == "ended" and stats.frames_delivered == len(got) > 0
    assert stats.encode_lag_s == 0.0
