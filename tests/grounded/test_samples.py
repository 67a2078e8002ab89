"""Training samples: snippets and event streams hold only frames that show something (as
serving leaves empty frames out), are deterministic by seed, and ask about what they show."""

from __future__ import annotations

import numpy as np

from streamvqa.models.grounded.samples import (
    TRAIN_SEED_MIN,
    _seen,
    busy_sample,
    busy_stream,
    event_sample,
    event_stream,
    questions_at,
    snippet_sample,
)
from streamvqa.synth.hard import HARD_SEED, moments
from streamvqa.synth.streams import Event, Stream, needle_questions, render_stream_frame


def _draw(fn, seed: int):
    rng = np.random.default_rng(seed)
    while (s := fn(rng)) is None:
        pass
    return s


def test_event_sample_deterministic_and_only_shown_frames():
    a, b = _draw(event_sample, 3), _draw(event_sample, 3)
    assert a.times == b.times and a.turns == b.turns
    assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames, strict=True))
    assert a.times == sorted(a.times) and len(a.turns) == len(a.types) <= 3
    # the frames are a subset of the stream's seconds: 3-6 s per event, at most eight events
    assert 3 <= len(a.frames) <= 8 * 6


def test_event_sample_frames_are_the_event_frames_of_its_stream():
    """Rebuild the stream event_sample drew and check the kept frames are exactly those with an
    active event, and that every question's answer is about an event the frames show."""
    s = _draw(event_sample, 11)
    stream = event_stream(np.random.default_rng(11))  # the first draw of that seed
    active = [float(i) for i in range(stream.n_frames) if any(e.active(i) for e in stream.events)]
    assert s.times == active
    shown = {e.colour for e in stream.events if e.kind == "object"} | {
        str(e.digit) for e in stream.events if e.kind == "digit"} | {
        e.shape for e in stream.events if e.kind == "object"} | {
        e.position for e in stream.events if e.kind == "object"}
    assert all(a in shown for _, a in s.turns)


def test_only_frames_with_an_active_event_are_kept():
    st = Stream(seed=1, duration=10, events=[Event(2, 2, shape="star", colour="red", position="left"),
                                             Event(6, 1, digit=4)])
    qs = needle_questions(st)
    s = _seen(st, qs, np.random.default_rng(0), n_turns=9, t0=100.0)
    assert s.times == [102.0, 103.0, 106.0]
    assert np.array_equal(s.frames[2], render_stream_frame(st, 6))
    assert sorted(s.turns) == sorted((q["question"], q["answer"]) for q in qs)


def test_snippets_are_deterministic_and_short():
    for seed in range(5):
        a, b = _draw(lambda r: snippet_sample(r, n_frames=12), seed), _draw(lambda r: snippet_sample(r, n_frames=12), seed)
        assert a.times == b.times and a.turns == b.turns
        assert 1 <= len(a.frames) <= 12


def test_busy_streams_never_use_the_hard_sets_seeds():
    rng = np.random.default_rng(0)
    seeds = [busy_stream(rng).seed for _ in range(200)]
    assert min(seeds) >= TRAIN_SEED_MIN > HARD_SEED + 10_000


def _pairs(ms) -> set[tuple[str, str]]:
    return {(str(o.colour), str(o.shape)) for m in ms for o in m.objects}


def test_busy_samples_answer_from_the_frames_they_show():
    """Rebuild each sample's stream (the first draw of its seed) and check: deterministic, the
    kept frames are the stream's non-empty frames up to the asking time, and every yes/no answer
    is what those frames show ("was there": any moment shown; "is there": the last one)."""
    checked = 0
    for seed in range(40):
        a, b = _draw(busy_sample, seed), _draw(busy_sample, seed)
        assert a.times == b.times and a.turns == b.turns
        assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames, strict=True))
        stream = busy_stream(np.random.default_rng(seed))
        last = a.times[-1]
        assert a.times == [float(i) for i in range(int(last) + 1) if any(e.active(i) for e in stream.events)]
        shown = [m for m in moments(stream) if m.t <= last]
        now = [m for m in shown if m.t <= last < m.end]
        for (q, ans), kind in zip(a.turns, a.types, strict=True):
            if kind.startswith(("exists_", "now_")):
                pair = tuple(q.removesuffix("?").split()[-2:])
                pool = _pairs(now) if kind.startswith("now_") else _pairs(shown)
                assert ans == ("yes" if pair in pool else "no"), (seed, q, ans)
                assert kind.endswith("yes") == (ans == "yes")
                checked += 1
    assert checked >= 20


def test_near_misses_join_a_colour_and_a_shape_shown_apart():
    rng = np.random.default_rng(5)
    for _ in range(20):
        stream = busy_stream(rng)
        at = stream.duration
        seen = moments(stream)
        colours = {o.colour for m in seen for o in m.objects}
        shapes = {o.shape for m in seen for o in m.objects}
        qs = [q for g in questions_at(stream, at, rng) for q in g]
        assert len({q["question"] for q in qs}) == len(qs) and {q["asked_at"] for q in qs} <= {at}
        for q in qs:
            if q["type"].startswith("exists_"):
                c, s = q["question"].removesuffix("?").split()[-2:]
                assert q["answer"] == ("yes" if (c, s) in _pairs(seen) else "no")
                assert c in colours and s in shapes


def test_balanced_samples_pair_every_yes_with_a_no_on_the_same_frames():
    """v6: a sample that asks "was there" (or "is there") asks it both ways, so a yes/no prior
    cannot lower the loss; the other answer types appear too."""
    kinds: set[str] = set()
    for seed in range(30):
        s = _draw(busy_sample, seed)
        kinds.update(s.types)
        for family in ("exists_", "now_"):
            mine = [t for t in s.types if t.startswith(family)]
            assert sorted(mine) in ([], [family + "no", family + "yes"]), (seed, s.types)
    assert kinds >= {"exists_yes", "exists_no", "now_yes", "now_no", "position_of", "colour_with", "count_with",
                     "after", "first_of"}
