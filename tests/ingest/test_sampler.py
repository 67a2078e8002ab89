"""Sampling by presentation timestamp: VFR, pts not starting at 0, missing pts, wrap-around."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from streamvqa.workers.ingest import IngestConfig, IngestWorker
from streamvqa.workers.ingest.sampler import FrameSampler, Timeline, fit_size

from .helpers import CollectingSink
from .media import read_index, write_index_ts_vfr


def pick(times: list[float], fps: float) -> list[int]:
    sampler = FrameSampler(fps)
    return [i for i, t in enumerate(times) if sampler.accept(t)]


def reference_pick(times: list[float], fps: float) -> list[int]:
    """Independent statement of the rule: keep frame i if it is the first at/after an instant
    k/fps that no earlier kept frame has reached."""
    kept, served = [], -1
    for i, t in enumerate(times):
        k = math.floor(t * fps + 1e-6)
        if k > served:
            kept.append(i)
            served = k
    return kept


VFR = [0.0, 0.03, 0.07, 0.5, 0.51, 0.9, 1.02, 1.04, 2.7, 2.71, 3.0, 3.4, 3.49, 3.51, 4.0]


@pytest.mark.parametrize("fps", [0.5, 1.0, 2.0, 4.0, 30.0])
def test_sampler_vfr_matches_rule(fps: float) -> None:
    assert pick(VFR, fps) == reference_pick(VFR, fps)


def test_sampler_examples() -> None:
    assert pick(VFR, 1.0) == [0, 6, 8, 10, 14]  # t = 0, 1.02, 2.7, 3.0, 4.0
    assert pick(VFR, 2.0) == [0, 3, 6, 8, 10, 13, 14]  # after the 1.04 -> 2.7 gap: one frame, no burst
    assert pick([i / 25 for i in range(250)], 25.0) == list(range(250))


def test_timeline_offsets_and_gaps() -> None:
    tl = Timeline()
    assert [tl.map(p) for p in (1000.0, 1000.5, 1001.0)] == [0.0, 0.5, 1.0]  # pts start far from 0
    tl.new_segment(5.0)  # reconnect: the next frame continues at 5.0 whatever its pts
    assert [tl.map(p) for p in (3.0, 3.25)] == [5.0, 5.25]
    assert tl.map(0.0, step=0.04) == pytest.approx(5.29)  # pts went back (a loop): one step later
    t_none = tl.map(None, step=0.04)  # frame without pts: one step after the previous
    assert t_none == pytest.approx(5.33)
    assert tl.map(0.0, step=0.04) == pytest.approx(5.37)  # next real pts continues from there


def test_fit_size() -> None:
    assert fit_size(1920, 1080, 1280, 720) == (1280, 720)
    assert fit_size(320, 240, 1280, 720) == (320, 240)  # never upscales
    assert fit_size(1080, 1920, 1280, 720) == (405, 720)  # portrait
    assert fit_size(4000, 100, 1280, 720) == (1280, 32)


def test_vfr_ts_file_with_offset_pts(media_dir: Path) -> None:
    """A real MPEG-TS with variable frame rate and pts starting at 100 s."""
    path = write_index_ts_vfr(media_dir / "vfr.ts", VFR, start_s=100.0)
    sink = CollectingSink()
    worker = IngestWorker(IngestConfig(url=str(path), fps=2.0, queue_size=100), sink).start()
    try:
        assert worker.wait(30)
    finally:
        worker.stop()
    frames = sink.snapshot()
    want = reference_pick(VFR, 2.0)
    assert [read_index(f.image) for f in frames] == want
    assert [round(f.t, 3) for f in frames] == [VFR[i] for i in want]
    assert worker.state.value == "ended" and worker.frames_decoded == len(VFR)
