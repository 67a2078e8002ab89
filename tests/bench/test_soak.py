"""`streamvqa bench soak`: growth fit, /proc sampling, the looped real video, and one short run
against a real `streamvqa serve` child process (tiny model)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import av
import pytest

from bench.soak import loop_video, per_frame, process_memory, sample_video, slope_per_hour
from streamvqa.cli import main


def test_slope_per_hour_is_the_least_squares_rate() -> None:
    ts = [0.0, 60.0, 120.0, 180.0]
    assert slope_per_hour(ts, [5 + 2 * t for t in ts]) == pytest.approx(7200.0)
    assert slope_per_hour(ts[:2], [1.0, 2.0]) is None  # too few points to call it a trend
    frames = [{"frames_encoded": f, "rss": 100 + 3 * f} for f in (0, 10, 20, 40)]
    assert per_frame(frames, "rss") == pytest.approx(3.0)


def test_process_memory_reads_this_process() -> None:
    mem = process_memory(os.getpid())
    assert mem["VmRSS"] > 0 and mem["RssAnon"] > 0 and mem["heap_rss"] >= 0 and mem["arena_count"] >= 0
    assert mem["VmRSS"] >= mem["RssAnon"]


def test_loop_video_lasts_as_asked(tmp_path: Path) -> None:
    out = loop_video(sample_video(), tmp_path / "loop.mp4", 12.0)
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        assert (s.width, s.height) == (1280, 720)
        pts = [f.time for f in c.decode(s)]
    assert pts == sorted(pts) and pts[-1] >= 12.0


@pytest.mark.slow
def test_soak_runs_against_a_real_server(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    rc = main(["bench", "soak", "--model", "tiny:smolvlm", "--methods", "rekv,sliding-window", "--minutes", "0.4",
               "--sample-s", "3", "--ask-every", "4", "--max-tokens", "2", "--json", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert len(result["samples"]) >= 3 and result["questions"]["answers"] > 0
    last = result["last"]
    assert last["frames_encoded"] > 0 and last["rss_minus_kv"] == last["VmRSS"] - last["kv_in_process_bytes"]
    assert set(last["kv_bytes"]) >= {"device", "host"}
    assert result["growth"]["rss_bytes_per_hour"] is not None


def test_mallinfo2_reads_glibc_heap() -> None:
    from bench.soak_engine import mallinfo2

    m = mallinfo2()
    if m is None:
        pytest.skip("not glibc >= 2.33")
    assert m["malloc_in_use"] > 0 and m["malloc_arena"] >= m["malloc_in_use"]


@pytest.mark.slow
def test_soak_in_process_separates_answer_caches_from_the_rest(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    rc = main(["bench", "soak", "--in-process", "--model", "tiny:smolvlm", "--methods", "rekv,sliding-window",
               "--frames", "30", "--n-local", "40", "--ask-every-frames", "5", "--sample-every", "10",
               "--max-tokens", "2", "--json", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert [s["frames"] for s in result["samples"]] == [10, 20, 30]
    last = result["last"]
    assert last["answers"] == 12 and last["answer_bytes"] == last["kv_bytes"]["answer"] > 0
    assert last["rss_minus_kv"] == last["VmRSS"] - last["kv_in_process_bytes"]
    assert last["index_bytes"] > 0 and result["window_full_at_frame"] is not None
    assert result["growth"]["rss_minus_kv_bytes_per_frame"] is not None
