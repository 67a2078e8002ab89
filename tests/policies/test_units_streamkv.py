"""Stage 1 in a session: StreamKV semantic segments (+ summary units) and the size-cap merge."""

from streamvqa.engine import Engine
from tests.engine.conftest import get_adapter, make_frames


def frames_of(pattern: str):
    """One random image per letter; repeated letters are identical frames."""
    images = {c: make_frames(1, seed=ord(c))[0][0] for c in set(pattern)}
    return [(images[c], float(i)) for i, c in enumerate(pattern)]


def open_streamkv(**options):
    base = {"retention_options": {"kept_fraction": 1.0}, "min_segment": 2, "segment_theta": 0.999}
    return Engine(adapter=get_adapter("tiny:smolvlm")).open_stream("s", method="streamkv", options={**base, **options})


def test_segments_close_where_adjacent_frames_differ_and_each_gets_a_summary():
    session = open_streamkv()
    for image, t in frames_of("AAABBBCC"):
        session.push_frame(image, t)
    units = session.retainer.memory.units
    assert [(u.t_start, u.t_end) for u in units.values() if u.kind == "frames"] == [(0.0, 2.0), (3.0, 5.0)]
    assert [u.t_start for u in units.values() if u.kind == "summary"] == [2.0, 5.0]
    answer = session.answer("What happened?", max_tokens=2)  # the open segment CC is closed first
    spans = [(u.t_start, u.t_end) for u in session.retainer.memory.units.values() if u.kind == "frames"]
    assert spans[-1] == (6.0, 7.0) and answer.evidence == [(0.0, 2.0), (3.0, 5.0), (6.0, 7.0)]


def test_min_segment_keeps_short_segments_open():
    session = open_streamkv(min_segment=3, summary=False)
    for image, t in frames_of("ABCDEF"):
        session.push_frame(image, t)
    units = session.retainer.memory.units
    assert [(u.t_start, u.t_end) for u in units.values()] == [(0.0, 2.0), (3.0, 5.0)][: len(units)]
    assert all(u.t_end - u.t_start == 2.0 for u in units.values())


def test_the_size_cap_merges_the_most_similar_pair():
    session = open_streamkv(max_segment=4, summary=False)
    for image, t in frames_of("AAAAAAB"):
        session.push_frame(image, t)
    assert session.stats().frames_merged == 2  # 6 identical frames held in 4
    session.answer("What happened?", max_tokens=1)
    first = next(iter(session.retainer.memory.units.values()))
    assert (first.t_start, first.t_end) == (0.0, 5.0)
    per_frame = first.n_tokens // 4
    assert first.n_tokens == 4 * per_frame
