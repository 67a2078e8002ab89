"""Evidence ranges span the time their frames stood for and carry the source / wall clocks
(issue 17, items 8 and 9): a one-frame unit used to be the empty range [t, t]."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamvqa.proto import StreamInfo
from streamvqa.server.evidence import evidence_ranges

from .conftest import wait_stream


def spans(ranges, fps, **kw) -> list[tuple[float, float]]:
    return [(e.t_start, e.t_end) for e in evidence_ranges(ranges, fps, **kw)]


def test_one_frame_units_stand_for_their_sampling_slot() -> None:
    assert spans([(0.0, 0.0), (1.0, 1.0), (2.0, 2.0), (5.0, 5.0)], 1.0) == [(0.0, 3.0), (5.0, 6.0)]
    assert spans([(4.0, 7.0)], 1.0) == [(4.0, 8.0)]  # a 4-frame unit: its last frame stands for 1 s too


def test_frames_in_consecutive_slots_merge_on_an_irregular_source() -> None:
    # a 25 fps source sampled at 2 fps keeps frames at 0, 0.52, 1.0, 1.52: no gap between them
    assert spans([(0.0, 0.0), (0.52, 0.52), (1.0, 1.0), (1.52, 1.52)], 2.0) == [(0.0, 2.0)]
    # 29.97 fps at 1 fps: frames at 0, 1.001, 2.002 -> one range; a skipped slot separates
    assert spans([(0.0, 0.0), (1.001, 1.001), (2.002, 2.002), (4.004, 4.004)], 1.0) == [(0.0, 3.0), (4.004, 5.0)]


def test_at_caps_the_end_and_clocks_are_mapped() -> None:
    assert spans([(0.0, 0.0), (1.0, 1.0)], 1.0, at=1.5) == [(0.0, 1.5)]
    tb = {"source_pts_at_zero": 100.0, "wall_clock_at_zero": 5000.0,
          "segments": [{"t": 0.0, "source_pts": 100.0, "wall_clock": 5000.0},
                       {"t": 10.0, "source_pts": 3.0, "wall_clock": 5012.0}]}
    [a, b] = evidence_ranges([(2.0, 2.0), (11.0, 11.0)], 1.0, tb)
    assert (a.source_start, a.source_end, a.wall_clock_start, a.wall_clock_end) == (102.0, 103.0, 5002.0, 5003.0)
    assert (b.source_start, b.source_end, b.wall_clock_start, b.wall_clock_end) == (4.0, 5.0, 5013.0, 5014.0)
    [c] = evidence_ranges([(1.0, 1.0)], 1.0, None)
    assert (c.source_start, c.wall_clock_end) == (None, None)


@pytest.mark.slow
def test_api_evidence_has_length_and_the_stream_reports_its_time_base(client, clip: Path) -> None:
    r = client.post("/v1/streams", json={"url": clip.as_uri(), "fps": 5, "method": "rekv"})
    assert r.status_code == 201, r.text
    info = wait_stream(client, r.json()["id"], lambda s: s["state"] == "ended")
    assert info["state"] == "ended", info
    tb = StreamInfo.model_validate(info).time_base
    assert tb is not None and tb.source_pts_at_zero == 0.0
    assert tb.wall_clock_at_zero is None  # decoded as fast as possible (realtime_files off)
    r = client.post(f"/v1/streams/{info['id']}/questions", json={"question": "What is shown?", "max_tokens": 2})
    assert r.status_code == 200, r.text
    ev = r.json()["evidence"]
    assert ev and all(e["t_end"] > e["t_start"] for e in ev), ev
    assert all(e["t_end"] <= 3.0 + 1e-9 for e in ev), ev  # 3 s clip: the last frame (2.8 s) stands for 0.2 s
    assert all(e["source_start"] == pytest.approx(e["t_start"]) and e["wall_clock_start"] is None for e in ev)
