"""Random training/evaluation samples: single scenes with QA turns, and short stream snippets.

Snippets are a few frames of drifting background with one to three events (objects or digits,
each lasting one to three frames) and needle questions about them. Event streams are what the
LM reads of a long stream: up to eight events of one to six seconds each, minutes apart. In both,
frames with nothing to see are left out, as serving leaves them out (`models.default.empty_frames`).
"""

from __future__ import annotations

import numpy as np

from streamvqa.models.grounded.sequences import Sample
from streamvqa.models.grounded.vision import COLOURS, POSITIONS, SHAPES
from streamvqa.synth.hard import hard_questions, hard_stream, moments
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


# -- busy streams of the hard set (v5) ------------------------------------------------------------
# Training streams are drawn from seeds at or above this, far from the evaluation's (`HARD_SEED`
# 22,000 and the few after it, needle 7,000+): the hard set's generators, never its streams.
TRAIN_SEED_MIN = 1_000_000
HARD_TYPE_WEIGHTS = {"position_of": 1.0, "exists_yes": 0.5, "exists_no": 2.0, "now_yes": 1.5, "now_no": 2.0,
                     "colour_with": 2.5, "count_with": 1.5, "after": 1.5, "first_of": 1.0, "latest_digit": 2.0}


def busy_stream(rng: np.random.Generator, minutes: tuple[float, float] = (1.0, 4.0)) -> Stream:
    """A `hard_stream` (moments of one to three objects, repeated fillers, near-miss pairs) of a
    few minutes, from a training seed, at a random frame size."""
    w, h = SIZES[int(rng.integers(len(SIZES)))]
    return hard_stream(int(rng.integers(TRAIN_SEED_MIN, 2**31 - 1)), minutes=float(rng.uniform(*minutes)),
                       width=w, height=h)


def was_there_questions(stream: Stream, at: float, rng: np.random.Generator, n: int = 4) -> list[dict]:
    """"Was there a <colour> <shape>?" asked at `at`, half yes (any pair shown, repeated or not)
    and half cross-event near misses: a colour and a shape both shown, never on one object."""
    seen = [m for m in moments(stream) if m.t < at]
    shown = sorted({(str(o.colour), str(o.shape)) for m in seen for o in m.objects})
    colours, shapes = {c for c, _ in shown}, {s for _, s in shown}
    misses = sorted((c, s) for c in colours for s in shapes if (c, s) not in shown)
    out = []
    for c, s in _without_repeats(rng, shown, misses, n):
        yes = (c, s) in shown
        out.append({"type": "exists_yes" if yes else "exists_no", "question": f"Was there a {c} {s}?",
                    "answer": "yes" if yes else "no", "asked_at": at})
    return out


def _without_repeats(rng: np.random.Generator, yes: list, no: list, n: int, p_yes: float = 0.4) -> list:
    """Up to `n` distinct picks, each from `yes` with probability `p_yes` (else from `no`)."""
    yes, no, out = list(yes), list(no), []
    for _ in range(n):
        pool = yes if (rng.random() < p_yes and yes) or not no else no
        if not pool:
            break
        out.append(pool.pop(int(rng.integers(len(pool)))))
    return out


def now_questions(stream: Stream, rng: np.random.Generator) -> list[dict]:
    """"Is there a <colour> <shape>?" while a moment is on screen: yes for one of its objects, no
    for the colour of one and the shape of another, or a pair shown only at another moment."""
    ms = [m for m in moments(stream) if m.objects and m.duration >= 2]
    if not ms:
        return []
    m = ms[int(rng.integers(len(ms)))]
    at = m.t + float(rng.integers(1, int(m.duration) + 1)) / stream.fps  # its last frame shown is in m
    on = {(str(o.colour), str(o.shape)) for o in m.objects}
    inside = [(str(a.colour), str(b.shape)) for a in m.objects for b in m.objects
              if a is not b and (a.colour, b.shape) not in on]
    elsewhere = [(str(o.colour), str(o.shape)) for m2 in moments(stream) if m2.t < m.t for o in m2.objects
                 if (o.colour, o.shape) not in on]
    pool = inside if inside and (rng.random() < 0.6 or not elsewhere) else elsewhere
    out = []
    for c, s in _without_repeats(rng, sorted(on), sorted(set(pool)), 2):
        yes = (c, s) in on
        out.append({"type": "now_yes" if yes else "now_no", "question": f"Is there a {c} {s}?",
                    "answer": "yes" if yes else "no", "asked_at": at})
    return out


def hard_sample(rng: np.random.Generator, n_turns: int = 3, minutes: tuple[float, float] = (1.0, 4.0)) -> Sample | None:
    """A busy stream up to one asking time, with up to `n_turns` questions asked then: the hard
    set's own questions (`hard_questions`, every unique pair a needle), "was there" yes / cross-event
    near misses, and "is there" while a moment is on screen. Only frames that show something."""
    stream = busy_stream(rng, minutes)
    r = rng.random()
    if r < 0.25:
        qs = now_questions(stream, rng)
    elif r < 0.5:
        qs = was_there_questions(stream, stream.duration, rng)
    else:
        qs = [q for q in hard_questions(stream, max_needles=16) if q["scored"] == "answer"]
        qs = list({q["question"] + str(q["asked_at"]): q for q in qs}.values())  # each question once
    if not qs:
        return None
    w = np.array([HARD_TYPE_WEIGHTS[q["type"]] for q in qs])
    first = qs[int(rng.choice(len(qs), p=w / w.sum()))]
    same = [q for q in qs if q["asked_at"] == first["asked_at"] and q is not first]
    pick = [first] + [same[int(i)] for i in rng.permutation(len(same))[: n_turns - 1]]
    # serving answers a question before the frame at its asking time arrives
    shown = [i for i in range(stream.n_frames) if i / stream.fps < first["asked_at"]
             and any(e.active(i / stream.fps) for e in stream.events)]
    return Sample([render_stream_frame(stream, i) for i in shown], [i / stream.fps for i in shown],
                  [(q["question"], q["answer"]) for q in pick], [q["type"] for q in pick])
