"""Random training/evaluation samples: single scenes with QA turns, and short stream snippets.

Snippets are a few frames of drifting background with one to three events (objects or digits,
each lasting one to three frames) and needle questions about them. Event streams are what the
LM reads of a long stream: up to eight events of one to six seconds each, minutes apart. Busy
streams are the hard set's (`synth.hard`), a few minutes long, cut at one asking time with
questions of every type it asks, yes and no on the same frames. In all of them, frames with
nothing to see are left out, as serving leaves them out (`models.default.empty_frames`).
"""

from __future__ import annotations

import numpy as np

from streamvqa.models.grounded.sequences import Sample
from streamvqa.models.grounded.vision import COLOURS, POSITIONS, SHAPES
from streamvqa.synth.hard import hard_stream, moments, moments_with, question_truth
from streamvqa.synth.qa import QA_TYPES, question_of_type
from streamvqa.synth.scenes import random_scene, render_scene
from streamvqa.synth.streams import Event, Stream, needle_questions, random_stream, render_stream_frame

SIZES = ((128, 128), (96, 96), (160, 120), (64, 64), (192, 144))
TYPE_WEIGHTS = {"colour": 1.0, "shape": 1.0, "count": 0.7, "position": 1.0, "digit": 0.8, "exists": 3.0}


def random_time(rng: np.random.Generator) -> float:
    return float(rng.integers(0, 3600))


def scene_sample(rng: np.random.Generator, n_turns: int = 3, kinds: tuple[str, ...] | None = None) -> Sample:
    """One frame of a random scene, `n_turns` questions of weighted-random types."""
    scene = random_scene(rng)
    w, h = SIZES[int(rng.integers(len(SIZES)))]
    if kinds is None:
        p = np.array([TYPE_WEIGHTS[k] for k in QA_TYPES])
        kinds = tuple(str(k) for k in rng.choice(QA_TYPES, size=n_turns, replace=False, p=p / p.sum()))
    qas = [question_of_type(scene, k, rng) for k in kinds]
    return Sample([render_scene(scene, w, h)], [random_time(rng)], [(q.question, q.answer) for q in qas],
                  [q.type for q in qas])


def snippet_stream(rng: np.random.Generator, n_frames: int, gap: float) -> Stream:
    """A short stream of `n_frames` frames `gap` seconds apart with 1-3 non-overlapping events."""
    n_ev = int(rng.integers(1, min(3, n_frames) + 1))
    starts = sorted(int(s) for s in rng.choice(n_frames, size=n_ev, replace=False))
    shapes = list(rng.choice(SHAPES, size=n_ev, replace=False))
    events = []
    for i, s in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else n_frames
        span = int(rng.integers(1, min(3, end - s) + 1))
        t, dur = s * gap, span * gap
        if rng.random() < 0.3:
            events.append(Event(t, dur, digit=int(rng.integers(0, 10)), digit_colour=str(rng.choice(["white", "black"]))))
        else:
            events.append(Event(t, dur, shape=str(shapes[i]), colour=str(rng.choice(COLOURS)),
                                position=str(rng.choice(POSITIONS)), size=float(rng.uniform(0.1, 0.14))))
    w, h = SIZES[int(rng.integers(len(SIZES)))]
    base = int(rng.integers(80, 160))
    return Stream(seed=int(rng.integers(2**31 - 1)), duration=n_frames * gap, fps=1.0 / gap, width=w, height=h,
                  background=tuple(int(base + rng.integers(-10, 11)) for _ in range(3)),  # type: ignore[arg-type]
                  drift=tuple(float(rng.uniform(5, 15)) for _ in range(3)),  # type: ignore[arg-type]
                  drift_period=float(rng.uniform(60, 400)), noise=float(rng.uniform(2, 8)), events=events)


def snippet_sample(rng: np.random.Generator, n_frames: int | None = None, n_turns: int = 2) -> Sample | None:
    """A stream snippet with needle questions; None when the events allow no question."""
    n = int(rng.integers(2, 9)) if n_frames is None else n_frames
    gap = float(rng.choice([1.0, 1.0, 2.0, 5.0]))
    stream = snippet_stream(rng, n, gap)
    qs = needle_questions(stream, rng)
    if not qs:
        return None
    t0 = float(rng.integers(0, 3000))
    return _seen(stream, qs, rng, n_turns, t0)


def event_stream(rng: np.random.Generator, max_events: int = 8) -> Stream:
    """1-5 object and 0-3 digit events of 3-6 s over 0.5-10 minutes, drawn by `random_stream`
    (the needle evaluation's streams)."""
    n_obj = int(rng.integers(1, 6))
    n_dig = int(rng.integers(0, min(3, max_events - n_obj) + 1))
    w, h = SIZES[int(rng.integers(len(SIZES)))]
    return random_stream(int(rng.integers(2**31 - 1)), minutes=float(rng.uniform(0.5, 10.0)), width=w, height=h,
                         n_objects=n_obj, n_digits=n_dig)


def event_sample(rng: np.random.Generator, n_turns: int = 3, max_events: int = 8) -> Sample | None:
    """What the LM sees of a long stream (`event_stream`): only the frames that show something;
    None when the events allow no question."""
    stream = event_stream(rng, max_events)
    qs = needle_questions(stream, rng)
    if not qs:
        return None
    return _seen(stream, qs, rng, n_turns, 0.0)


def _seen(stream: Stream, qs: list[dict], rng: np.random.Generator, n_turns: int, t0: float) -> Sample:
    """The stream's frames that show something (an empty frame adds no tokens in serving) with
    `n_turns` of its questions."""
    shown = [i for i in range(stream.n_frames) if any(e.active(i / stream.fps) for e in stream.events)]
    pick = rng.choice(len(qs), size=min(n_turns, len(qs)), replace=False)
    return Sample([render_stream_frame(stream, i) for i in shown], [t0 + i / stream.fps for i in shown],
                  [(qs[int(i)]["question"], qs[int(i)]["answer"]) for i in pick], [qs[int(i)]["type"] for i in pick])


# -- busy streams of the hard set (v6) ------------------------------------------------------------
# Training streams are drawn from seeds at or above this, far from the evaluation's (`HARD_SEED`
# 22,000 and the few after it, needle 7,000+): the hard set's generators, never its streams.
TRAIN_SEED_MIN = 1_000_000


def busy_stream(rng: np.random.Generator, minutes: tuple[float, float] = (1.0, 4.0)) -> Stream:
    """A `hard_stream` (moments of one to three objects, repeated fillers, near-miss pairs) of a
    few minutes, from a training seed, at a random frame size."""
    w, h = SIZES[int(rng.integers(len(SIZES)))]
    return hard_stream(int(rng.integers(TRAIN_SEED_MIN, 2**31 - 1)), minutes=float(rng.uniform(*minutes)),
                       width=w, height=h)


def questions_at(stream: Stream, at: float, rng: np.random.Generator, n_needles: int = 3) -> list[list[dict]]:
    """Questions of every answer type of the hard set asked at `at`, in groups that stay together:
    a "was there" yes with a cross-event near miss, an "is there" yes with a no while a moment is
    on screen (the same context answers both ways, so no yes/no prior pays), and per needle (a
    pair shown exactly once) where, what colour beside it, how many, what came right after, which
    came first. Answers from `question_truth`; ill-posed questions are dropped."""
    seen = [m for m in moments(stream) if m.t < at]
    groups: list[list[dict]] = []

    def q(kind: str, text: str, key: dict) -> dict | None:
        d = {"type": kind, "question": text, "asked_at": at, "key": key}
        a = question_truth(stream, d)
        return None if a is None else {**d, "answer": a}

    def group(*qs: dict | None) -> None:
        g = [x for x in qs if x is not None]
        if g:
            groups.append(g)

    shown = sorted({(str(o.colour), str(o.shape)) for m in seen for o in m.objects})
    colours, shapes = {c for c, _ in shown}, {s for _, s in shown}
    misses = [(c, s) for c in sorted(colours) for s in sorted(shapes) if (c, s) not in shown]
    if shown and misses:
        (c1, s1), (c2, s2) = shown[int(rng.integers(len(shown)))], misses[int(rng.integers(len(misses)))]
        yes = q("exists_yes", f"Was there a {c1} {s1}?", {"colour": c1, "shape": s1})
        if yes is None:  # shown more than once: still a yes, but question_truth asks for a unique pair
            yes = {"type": "exists_yes", "question": f"Was there a {c1} {s1}?", "asked_at": at, "answer": "yes"}
        group(*([yes, q("exists_no", f"Was there a {c2} {s2}?", {"colour": c2, "shape": s2})][:: 1 if rng.random() < 0.5 else -1]))
    now = [m for m in seen if m.t <= at - 1 / stream.fps < m.end]
    if len(now) == 1 and now[0].objects:
        objs = now[0].objects
        on = {(str(o.colour), str(o.shape)) for o in objs}
        y = objs[int(rng.integers(len(objs)))]
        off = [(str(a.colour), str(b.shape)) for a in objs for b in objs if (a.colour, b.shape) not in on]
        off = off or [p for p in shown if p not in on]
        n = off[int(rng.integers(len(off)))] if off else None
        pair = [q("now_yes", f"Is there a {y.colour} {y.shape}?", {"colour": y.colour, "shape": y.shape}),
                q("now_no", f"Is there a {n[0]} {n[1]}?", {"colour": n[0], "shape": n[1]}) if n else None]
        group(*(pair[:: 1 if rng.random() < 0.5 else -1]))
    if any(m.digit is not None for m in seen):
        group(q("latest_digit", "What digit was shown most recently?", {}))
    needles = [(m, o) for m in seen for o in m.objects if len(moments_with(seen, str(o.colour), str(o.shape))) == 1]
    for i in rng.permutation(len(needles))[:n_needles]:
        m, o = needles[int(i)]
        name, key = f"{o.colour} {o.shape}", {"colour": str(o.colour), "shape": str(o.shape)}
        others = [x for x in m.objects if x is not o]
        cands = [q("position_of", f"Where did the {name} appear?", key),
                 q("count_with", f"How many objects were in view when the {name} appeared?", key),
                 q("after", f"What appeared right after the {name}?", key)]
        if others:
            x = others[int(rng.integers(len(others)))]
            cands.append(q("colour_with", f"What colour was the {x.shape} shown with the {name}?",
                           {**key, "other_shape": str(x.shape)}))
        rivals = [(m2, o2) for m2, o2 in needles if m2 is not m and o2.shape != o.shape]
        if rivals:
            m2, o2 = rivals[int(rng.integers(len(rivals)))]
            a, b = (o, o2) if rng.random() < 0.5 else (o2, o)
            cands.append(q("first_of", f"Which came first, the {a.colour} {a.shape} or the {b.colour} {b.shape}?",
                           {"colour": str(a.colour), "shape": str(a.shape), "colour2": str(b.colour), "shape2": str(b.shape)}))
        for c in cands:
            group(c)
    return groups


def busy_sample(rng: np.random.Generator, n_turns: int = 6, minutes: tuple[float, float] = (1.0, 4.0)) -> Sample | None:
    """A busy stream (`busy_stream`) cut at a random asking time (half of them while a moment is on
    screen), with up to `n_turns` of `questions_at` then: every yes/no pair, the rest drawn across
    types, in random order. Only frames that show something before the asking time (serving answers
    before the frame at that time arrives)."""
    stream = busy_stream(rng, minutes)
    ms = moments(stream)
    if not ms:
        return None
    if rng.random() < 0.5:  # during a moment, after 1..duration of its frames
        m = ms[int(rng.integers(len(ms) // 2, len(ms)))]
        at = m.t + float(rng.integers(1, int(m.duration) + 1)) / stream.fps
    else:
        at = float(rng.uniform(ms[len(ms) // 2].end, stream.duration))
    groups = questions_at(stream, at, rng)
    if not groups:
        return None
    if n_turns < 2:  # one question (held-out scoring per type): pairs split up
        groups = [[x] for g in groups for x in g]
    pick: list[dict] = []
    pairs = [g for g in groups if len(g) > 1]  # the yes/no pairs first: the types v4 got wrong
    rest = [g for g in groups if len(g) == 1]
    for g in pairs + [rest[int(j)] for j in rng.permutation(len(rest))]:
        if len(pick) + len(g) <= n_turns:
            pick += g
    pick = [pick[int(j)] for j in rng.permutation(len(pick))]  # a pair's halves anywhere in the turns
    shown = [i for i in range(stream.n_frames) if i / stream.fps < at and any(e.active(i / stream.fps) for e in stream.events)]
    return Sample([render_stream_frame(stream, i) for i in shown], [i / stream.fps for i in shown],
                  [(x["question"], x["answer"]) for x in pick], [x["type"] for x in pick])
