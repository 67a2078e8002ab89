"""Time base bookkeeping: segments, continuation, bounds, and joining after an encoder restart."""

from __future__ import annotations

import pytest

from streamvqa.workers.ingest.timebase import MAX_SEGMENTS, TimeBase, joined, map_time, shifted


def test_segments_map_stream_time_to_source_and_wall_clock() -> None:
    tb = TimeBase()
    assert tb.to_dict() is None
    tb.begin(0.0, 12.0, 1000.0)
    tb.begin(2.0, 14.0, 1002.0)  # continues the first one: not a new segment
    tb.begin(10.0, 3.0, 1015.0)  # a reconnect: the source's clock restarted
    d = tb.to_dict()
    assert d == {"source_pts_at_zero": 12.0, "wall_clock_at_zero": 1000.0,
                 "segments": [{"t": 0.0, "source_pts": 12.0, "wall_clock": 1000.0},
                              {"t": 10.0, "source_pts": 3.0, "wall_clock": 1015.0}]}
    assert map_time(d, 4.0) == (16.0, 1004.0)
    assert map_time(d, 11.5) == (4.5, 1016.5)
    assert map_time(None, 1.0) == (None, None)


def test_first_segment_after_frames_without_pts_maps_zero_backwards() -> None:
    tb = TimeBase()
    tb.begin(1 / 15, 1 / 15, None)  # RTSP: the first frame had no pts, the second is at 1/15 s
    d = tb.to_dict()
    assert d["source_pts_at_zero"] == pytest.approx(0.0) and d["wall_clock_at_zero"] is None
    assert map_time(d, 0.0) == (pytest.approx(0.0), None)


def test_segments_are_bounded_keeping_the_first() -> None:
    tb = TimeBase()
    for i in range(3 * MAX_SEGMENTS):
        tb.begin(float(i), 1000.0 * i, None)  # a flapping source: each reconnect restarts pts
    segs = tb.to_dict()["segments"]
    assert len(segs) == MAX_SEGMENTS
    assert segs[0]["t"] == 0.0 and segs[-1]["t"] == 3 * MAX_SEGMENTS - 1


def test_restarted_ingest_segments_join_the_earlier_ones() -> None:
    before = {"source_pts_at_zero": 0.0, "wall_clock_at_zero": 100.0,
              "segments": [{"t": 0.0, "source_pts": 0.0, "wall_clock": 100.0}]}
    after = {"source_pts_at_zero": 0.0, "wall_clock_at_zero": 130.0,
             "segments": [{"t": 20.0, "source_pts": 20.0, "wall_clock": 150.0}]}
    d = joined(before, after)
    assert [s["t"] for s in d["segments"]] == [0.0, 20.0]
    assert map_time(d, 10.0) == (10.0, 110.0) and map_time(d, 25.0) == (25.0, 155.0)
    assert joined(d, after) == d  # polled again: nothing new
    assert shifted(after, 5.0)["segments"][0]["t"] == 25.0


def test_live_wall_clock_keeps_the_earliest_start_later_frames_imply() -> None:
    """Frames read while FFmpeg probes are decoded late: a later frame, on time, corrects it."""
    tb = TimeBase()
    tb.begin(0.0, 0.0, 1001.0)  # the first keyframe, decoded 1 s after it arrived
    tb.refine_wall(0.5, 1001.1)  # still from the probe buffer
    tb.refine_wall(2.0, 1002.05)  # live again: the segment started at 1000.05
    tb.refine_wall(2.5, 1003.0)  # a late frame never moves it later
    assert tb.to_dict()["wall_clock_at_zero"] == pytest.approx(1000.05)
