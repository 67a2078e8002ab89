"""Busy synthetic streams with distractors and questions at known distances from their evidence.

A *moment* is a group of events shown together (one to three objects, or a digit, or a digit and
an object) every 10-25 s for 5-9 s, so a 30-minute stream at 1 fps shows ~700 frames (~8.4K
tokens of the default model, 12 per frame) and a 60-minute one ~1,400 (~17K): more than the
model's 8,192 positions and every preset's hot window.

The (colour, shape) pairs are split per stream (seeded):

- *needles* appear exactly once: they are what questions name ("Where did the red star appear?");
- *absent* pairs never appear, though their colour and their shape do, in other objects: the
  near-miss "Was there a purple cross?" whose answer is no;
- *fillers* repeat all through the stream: the same shape in other colours, and (for digits)
  the same digit again, as distractors.

Digits: a few appear exactly once (evidence-time questions: "When did the digit 7 appear?"), the
others repeat. Every question carries its answer, the time it is asked (during the stream, not
only at its end), the evidence ranges [start, end) it needs, its distance in seconds from the
farthest of them and whether its evidence shows several objects at once; `question_truth` recomputes an answer from the events alone (tests use it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from streamvqa.models.grounded.vision import COLOURS, COUNT_WORDS, POSITIONS, SHAPES
from streamvqa.synth.streams import Event, Stream

HARD_SEED = 22_000
COMBOS = tuple((c, s) for c in COLOURS for s in SHAPES)
DISTANCES = (60.0, 300.0, 900.0, 2700.0)  # about 1, 5, 15 and 45 minutes back
# distance buckets (upper bounds in seconds): during the moment, then ~1, 5, 15 and 45 minutes
BUCKETS = (("now", 30.0), ("1m", 150.0), ("5m", 600.0), ("15m", 1800.0), ("45m", math.inf))
ANSWER_TYPES = ("position_of", "exists_yes", "exists_no", "now_yes", "now_no", "colour_with", "count_with",
                "after", "first_of", "latest_digit")
EVIDENCE_ONLY = ("digit_when",)  # scored on evidence ranges alone
PLACE = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
         "centre": "in the centre"}


@dataclass(frozen=True)
class Moment:
    """Events shown together from `t` for `duration` seconds."""

    t: float
    duration: float
    events: tuple[Event, ...]

    @property
    def end(self) -> float:
        return self.t + self.duration

    @property
    def objects(self) -> list[Event]:
        return [e for e in self.events if e.kind == "object"]

    @property
    def digit(self) -> int | None:
        return next((e.digit for e in self.events if e.kind == "digit"), None)


def moments(stream: Stream) -> list[Moment]:
    """The stream's events grouped by start time (a moment's events share t and duration)."""
    groups: dict[float, list[Event]] = {}
    for e in stream.events:
        groups.setdefault(e.t, []).append(e)
    return [Moment(t, evs[0].duration, tuple(evs)) for t, evs in sorted(groups.items())]


def bucket(distance: float) -> str:
    return next(name for name, hi in BUCKETS if distance <= hi)


def objects_kind(evidence: list[Moment]) -> str:
    """"multi" when a moment of the evidence shows two or three objects, "single" when they show
    one, "none" without objects (a digit alone, or no evidence: a near miss)."""
    most = max((len(m.objects) for m in evidence), default=0)
    return "multi" if most >= 2 else ("single" if most == 1 else "none")


def _objects(rng: np.random.Generator, combos: list[tuple[str, str]], n: int, positions: list[str],
             first: tuple[str, str] | None = None) -> list[tuple[str, str, str]]:
    """`n` objects at distinct positions, with distinct shapes and distinct colours; `first` leads."""
    chosen: list[tuple[str, str]] = [first] if first else []
    for k in rng.permutation(len(combos)):
        if len(chosen) >= n:
            break
        c, s = combos[int(k)]
        if all(c != c2 and s != s2 for c2, s2 in chosen):
            chosen.append((c, s))
    places = list(rng.choice(positions, size=len(chosen), replace=False))
    return [(c, s, str(p)) for (c, s), p in zip(chosen, places, strict=True)]


def hard_stream(seed: int, minutes: float = 30.0, fps: float = 1.0, width: int = 128, height: int = 128,
                n_needles: int | None = None) -> Stream:
    """A busy stream of `minutes`, deterministic by `seed` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    duration = minutes * 60.0
    starts: list[float] = []
    t = float(rng.integers(3, 10))
    while t + 9 < duration:
        starts.append(t)
        t += float(rng.integers(10, 26))
    order = [COMBOS[int(i)] for i in rng.permutation(len(COMBOS))]
    n_need = n_needles if n_needles is not None else min(16, max(2, len(starts) // 5))
    needles, fillers = order[:n_need], order[n_need + 6:]  # the 6 between: never shown (near misses)
    digits = [int(d) for d in rng.permutation(10)]
    once, repeat = digits[:3], digits[3:]
    n_once = min(len(once), max(1, len(starts) // 12))
    # needle and once-digit moments spread evenly over the stream (jittered), the rest fillers
    special = np.linspace(0, len(starts) - 1, n_need + n_once + 2)[1:-1]
    slots = sorted({int(np.clip(round(x + rng.uniform(-1, 1)), 0, len(starts) - 1)) for x in special})
    kinds = [("needle", needles[i]) if i < n_need else ("digit", once[i - n_need]) for i in range(len(slots))]
    rng.shuffle(kinds)  # type: ignore[arg-type]
    special_at = dict(zip(slots, kinds, strict=False))
    events: list[Event] = []
    for i, t0 in enumerate(starts):
        dur = float(rng.integers(5, 10))
        kind = special_at.get(i)
        digit: int | None = None
        if kind is not None and kind[0] == "digit":
            digit, n_obj, first = int(kind[1]), int(rng.integers(0, 2)), None  # type: ignore[arg-type]
        elif kind is not None:
            n_obj, first = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3])), kind[1]  # type: ignore[assignment]
        elif rng.random() < 0.25:
            digit, n_obj, first = int(rng.choice(repeat)), int(rng.integers(0, 2)), None
        else:
            n_obj, first = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2])), None
        positions = [p for p in POSITIONS if digit is None or p != "centre"]
        t0 = math.floor(t0 * fps) / fps
        if digit is not None:
            events.append(Event(t0, dur, digit=digit, digit_colour=str(rng.choice(["white", "black"]))))
        for c, s, p in _objects(rng, fillers, n_obj, positions, first):  # type: ignore[arg-type]
            events.append(Event(t0, dur, shape=s, colour=c, position=p, size=float(rng.uniform(0.1, 0.13))))
    base = int(rng.integers(85, 150))
    return Stream(
        seed=seed, duration=duration, fps=fps, width=width, height=height,
        background=tuple(int(base + rng.integers(-12, 13)) for _ in range(3)),  # type: ignore[arg-type]
        drift=tuple(float(rng.uniform(5, 15)) for _ in range(3)),  # type: ignore[arg-type]
        drift_period=float(rng.uniform(120, 400)), noise=float(rng.uniform(2, 7)), events=events,
    )


# -- ground truth from the events alone -------------------------------------------------------------
def _seen(ms: list[Moment], at: float) -> list[Moment]:
    """Moments whose first frame was shown before `at`."""
    return [m for m in ms if m.t < at]


def moments_with(ms: list[Moment], colour: str, shape: str) -> list[Moment]:
    """The moments of `ms` that show a `colour` `shape`."""
    return [m for m in ms if any(o.colour == colour and o.shape == shape for o in m.objects)]


def question_truth(stream: Stream, q: dict) -> str | None:
    """The answer to `q` from the events shown before it is asked; None when ill-posed (the key
    is not unique, or the evidence is missing). Independent of how `hard_questions` built it."""
    ms, at, k = moments(stream), q["asked_at"], q["key"]
    seen = _seen(ms, at)
    kind = q["type"]
    if kind in ("position_of", "colour_with", "count_with", "after", "exists_yes"):
        hits = moments_with(seen, k["colour"], k["shape"])
        if len(hits) != 1:
            return None
        m = hits[0]
        obj = next(o for o in m.objects if o.colour == k["colour"] and o.shape == k["shape"])
        if kind == "exists_yes":
            return "yes"
        if kind == "position_of":
            return str(obj.position)
        if kind == "count_with":
            return COUNT_WORDS[len(m.objects)]
        if kind == "colour_with":
            other = [o for o in m.objects if o.shape == k["other_shape"]]
            return str(other[0].colour) if len(other) == 1 and other[0] is not obj else None
        later = [x for x in seen if x.t > m.t]
        if not later:
            return None
        nxt = later[0]
        if nxt.digit is not None and not nxt.objects:
            return str(nxt.digit)
        return str(nxt.objects[0].shape) if len(nxt.objects) == 1 and nxt.digit is None else None
    if kind == "exists_no":
        shown_c = any(o.colour == k["colour"] for m in seen for o in m.objects)
        shown_s = any(o.shape == k["shape"] for m in seen for o in m.objects)
        return "no" if shown_c and shown_s and not moments_with(seen, k["colour"], k["shape"]) else None
    if kind in ("now_yes", "now_no"):
        now = [m for m in seen if m.t <= at - 1 / stream.fps < m.end]
        if len(now) != 1:
            return None
        present = any(o.colour == k["colour"] and o.shape == k["shape"] for o in now[0].objects)
        return "yes" if present else "no"
    if kind == "first_of":
        a = moments_with(seen, k["colour"], k["shape"])
        b = moments_with(seen, k["colour2"], k["shape2"])
        if len(a) != 1 or len(b) != 1 or k["shape"] == k["shape2"]:
            return None
        return k["shape"] if a[0].t < b[0].t else k["shape2"]
    if kind == "latest_digit":
        ds = [m for m in seen if m.digit is not None]
        return str(ds[-1].digit) if ds else None
    if kind == "digit_when":
        ds = [m for m in seen if m.digit == k["digit"]]
        return "" if len(ds) == 1 else None
    raise ValueError(f"unknown question type {kind!r}")


# -- questions ------------------------------------------------------------------------------------
def hard_questions(stream: Stream, per_needle: int = 5, max_needles: int | None = None,
                   max_digits: int = 12) -> list[dict]:
    """Questions about `stream`, each with type, text, answer, asked_at, evidence, distance, bucket.

    Each needle is asked about once at one of the distances (rotating, where the stream is long
    enough) and again at the end of the stream; near-miss and "is there" questions are asked
    during the stream; "latest digit" after up to `max_digits` digits, "when" after each
    once-shown digit and at the end. Sorted by asked_at."""
    rng = np.random.default_rng(stream.seed + 29)
    ms = moments(stream)
    end = stream.duration
    shown = {(o.colour, o.shape) for m in ms for o in m.objects}
    absent = [c for c in COMBOS if c not in shown]
    absent = [absent[int(i)] for i in rng.permutation(len(absent))[:6]]
    qs: list[dict] = []

    def add(kind: str, text: str, at: float, key: dict, evidence: list[Moment]) -> None:
        q = {"type": kind, "question": text, "asked_at": float(at), "key": key,
             "evidence": [[m.t, m.end] for m in evidence]}
        answer = question_truth(stream, q)
        if answer is None:
            return
        q["answer"] = answer
        q["distance"] = max(0.0, float(at - min(m.end for m in evidence))) if evidence else None
        q["bucket"] = bucket(q["distance"]) if evidence else "none"
        q["objects"] = objects_kind(evidence)
        q["scored"] = "evidence" if kind in EVIDENCE_ONLY else "answer"
        qs.append(q)

    needle_ms = [(m, o) for m in ms for o in m.objects if len(moments_with(ms, str(o.colour), str(o.shape))) == 1]
    if max_needles is None:  # one needle per 8 moments, 2 to 16
        max_needles = min(16, max(2, len(ms) // 8))
    if len(needle_ms) > max_needles:  # short streams: many objects are unique; keep a spread
        needle_ms = [needle_ms[int(i)] for i in sorted(rng.choice(len(needle_ms), max_needles, replace=False))]
    for i, (m, o) in enumerate(needle_ms):
        name = f"{o.colour} {o.shape}"
        key = {"colour": o.colour, "shape": o.shape}
        fits = [d for d in DISTANCES if m.end + d <= end]
        times = [m.end + fits[i % len(fits)]] if fits else []
        times.append(end)
        nxt = next((x for x in ms if x.t > m.t), None)
        others = [x for x in m.objects if x is not o]
        earlier = [(m2, o2) for m2, o2 in needle_ms if m2.t < m.t and o2.shape != o.shape]
        cands: list[tuple] = [
            ("position_of", f"Where did the {name} appear?", key, [m]),
            ("exists_yes", f"Was there a {name}?", key, [m]),
            ("count_with", f"How many objects were in view when the {name} appeared?", key, [m]),
        ]
        if others:
            x = others[int(rng.integers(len(others)))]
            cands.append(("colour_with", f"What colour was the {x.shape} shown with the {name}?",
                          {**key, "other_shape": x.shape}, [m]))
        if nxt is not None:
            cands.append(("after", f"What appeared right after the {name}?", key, [m, nxt]))
        if earlier:
            m2, o2 = earlier[int(rng.integers(len(earlier)))]
            pair = [(o, m), (o2, m2)] if rng.random() < 0.5 else [(o2, m2), (o, m)]
            (a, ma), (b, mb) = pair
            cands.append(("first_of", f"Which came first, the {a.colour} {a.shape} or the {b.colour} {b.shape}?",
                          {"colour": a.colour, "shape": a.shape, "colour2": b.colour, "shape2": b.shape}, [ma, mb]))
        pick = rng.permutation(len(cands))[:per_needle]
        for at in times:
            for j in pick:
                kind, text, k, ev = cands[int(j)]
                if at >= max(x.end for x in ev):
                    add(kind, text, at, k, ev)
    # near misses: "was there" a colour and a shape seen, but never together
    for j, (c, s) in enumerate(absent):
        at = end if j % 2 else float(math.floor(end * (0.3 + 0.6 * rng.random())))
        add("exists_no", f"Was there a {c} {s}?", at, {"colour": c, "shape": s}, [])
    # "is there" while a multi-object moment is on screen: one of its pairs, or colour and shape
    # of two different objects in it (answer no)
    multi = [m for m in ms if len(m.objects) >= 2 and m.duration >= 4]
    for j in rng.permutation(len(multi))[: max(2, min(12, len(ms) // 10))]:
        m = multi[int(j)]
        a, b = m.objects[0], m.objects[1]
        at = m.t + 3 / stream.fps
        if rng.random() < 0.5:
            add("now_no", f"Is there a {a.colour} {b.shape}?", at, {"colour": a.colour, "shape": b.shape}, [m])
        else:
            add("now_yes", f"Is there a {b.colour} {b.shape}?", at, {"colour": b.colour, "shape": b.shape}, [m])
    # digits: the latest one, and when a once-shown digit appeared
    digit_ms = [m for m in ms if m.digit is not None]
    latest = set(rng.permutation(len(digit_ms))[:max_digits].tolist())
    for i, m in enumerate(digit_ms):
        later = [x for x in digit_ms if x.t > m.t]
        at = min(m.end + 60.0, later[0].t if later else end, end)
        if i in latest:
            add("latest_digit", "What digit was shown most recently?", at, {}, [m])
        if len([x for x in digit_ms if x.digit == m.digit]) != 1:
            continue
        fits = [d for d in DISTANCES if m.end + d <= end]
        for at in ([m.end + fits[int(rng.integers(len(fits)))]] if fits else []) + [end]:
            add("digit_when", f"When did the digit {m.digit} appear?", at, {"digit": m.digit}, [m])
    qs.sort(key=lambda q: (q["asked_at"], q["type"], q["question"]))
    return qs


def shown_frames(stream: Stream) -> list[bool]:
    """Per frame index: does it show something (so the default model spends tokens on it)?"""
    return [any(e.active(i / stream.fps) for e in stream.events) for i in range(stream.n_frames)]


def stream_tokens(stream: Stream, frame_tokens: int = 12) -> int:
    """Tokens the default model spends on the whole stream (12 per frame that shows something)."""
    return sum(shown_frames(stream)) * frame_tokens
