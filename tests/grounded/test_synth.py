"""Synthetic scenes, QA templates and streams: determinism, label consistency, MP4 round trip."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from streamvqa.models.grounded.vision import COLOURS, COUNT_WORDS, SHAPES
from streamvqa.synth import (
    needle_questions,
    random_scene,
    random_stream,
    render_scene,
    render_stream_frame,
    scene_labels,
    scene_questions,
    write_stream,
)
from streamvqa.synth.qa import QA_TYPES
from streamvqa.synth.scenes import RGB


def test_scenes_deterministic_by_seed():
    a = [random_scene(np.random.default_rng(7)) for _ in range(2)]
    assert a[0] == a[1]
    assert np.array_equal(render_scene(a[0]), render_scene(a[1]))
    qa = [scene_questions(a[0], np.random.default_rng(3)) for _ in range(2)]
    assert qa[0] == qa[1]
    other = random_scene(np.random.default_rng(8))
    assert not np.array_equal(render_scene(a[0]), render_scene(other))


def test_scene_invariants():
    rng = np.random.default_rng(0)
    for _ in range(200):
        s = random_scene(rng)
        assert 1 <= len(s.objects) <= 3
        assert len({o.position for o in s.objects}) == len(s.objects)
        assert len({(o.shape, o.colour) for o in s.objects}) == len(s.objects)
        if s.digit is not None:
            assert all(o.position != "centre" for o in s.objects)
        lab = scene_labels(s)
        assert lab["count"] == len(s.objects) == int((lab["shape"] > 0).sum())


def test_rendered_colour_at_object_centre():
    rng = np.random.default_rng(1)
    for _ in range(20):
        s = random_scene(rng, digit_p=0.0)
        s.noise = 0.0
        img = render_scene(s, 128)
        for o in s.objects:
            from streamvqa.synth.scenes import ANCHORS

            ax, ay = ANCHORS[o.position]
            y, x = int((ay + o.dy) * 128), int((ax + o.dx) * 128)
            assert np.abs(img[y, x].astype(int) - np.array(RGB[o.colour])).max() <= 1


def test_qa_answers_match_labels():
    rng = np.random.default_rng(2)
    for _ in range(300):
        s = random_scene(rng)
        pairs = {(o.shape, o.colour) for o in s.objects}
        for qa in scene_questions(s, rng):
            assert qa.type in QA_TYPES
            if qa.type == "count":
                assert qa.answer == COUNT_WORDS[len(s.objects)]
            elif qa.type == "digit":
                assert qa.answer == ("none" if s.digit is None else str(s.digit))
            elif qa.type == "colour":
                assert qa.answer in COLOURS and any(o.colour == qa.answer for o in s.objects)
            elif qa.type == "shape":
                assert qa.answer in SHAPES and any(o.shape == qa.answer for o in s.objects)
            elif qa.type == "position":
                words = qa.question.rstrip("?").split()
                colour, shape = words[-2], words[-1]
                assert qa.answer == next(o.position for o in s.objects if (o.shape, o.colour) == (shape, colour))
            elif qa.type == "exists":
                words = qa.question.rstrip("?").split()
                assert qa.answer == ("yes" if (words[-1], words[-2]) in pairs else "no")


def test_stream_needles_match_events():
    st = random_stream(5, minutes=3)
    assert random_stream(5, minutes=3) == st
    objs = [e for e in st.events if e.kind == "object"]
    digits = [e for e in st.events if e.kind == "digit"]
    assert len({e.shape for e in objs}) == len(objs)
    ends = sorted((e.t, e.t + e.duration) for e in st.events)
    assert all(a[1] <= b[0] for a, b in zip(ends, ends[1:], strict=False)), "events overlap"
    assert ends[-1][1] <= st.duration
    for q in needle_questions(st):
        if q["type"] == "colour_of":
            shape = q["question"].split()[4]
            assert q["answer"] == next(e.colour for e in objs if e.shape == shape)
        if q["type"] == "latest_digit":
            assert q["answer"] == str(max(digits, key=lambda e: e.t).digit)
        if q["type"] == "first_of":
            a, b = q["question"].rstrip("?").split("the ")[1:]
            ta = next(e.t for e in objs if e.shape == a.split()[0])
            tb = next(e.t for e in objs if e.shape == b.split()[0])
            assert q["answer"] == (a.split()[0] if ta < tb else b.split()[0])
        for lo, hi in q["evidence"]:
            assert 0 <= lo < hi <= st.duration
    # the evidence frames really show the event, a frame far from all events shows background only
    e = objs[0]
    i = int(e.t * st.fps)
    frame = render_stream_frame(st, i)
    assert frame.shape == (st.height, st.width, 3)


def test_mp4_round_trip(tmp_path):
    st = random_stream(11, minutes=0.5, fps=2.0, width=96, height=64)
    js = write_stream(st, tmp_path / "s.mp4")
    meta = json.loads(js.read_text())
    assert meta["questions"] and meta["video"] == "s.mp4"
    with av.open(str(tmp_path / "s.mp4")) as c:
        frames = [(f.time, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    assert len(frames) == st.n_frames == 60
    assert [t for t, _ in frames] == pytest.approx([i / 2.0 for i in range(60)])
    assert frames[0][1].shape == (64, 96, 3)
    # lossy but close to the rendered frames
    err = np.abs(frames[10][1].astype(int) - render_stream_frame(st, 10).astype(int)).mean()
    assert err < 8
