"""Synthetic streams: minutes of drifting, noisy background with events at known times.

An event is a single object or a big digit appearing for a few seconds. Needle questions about
past events carry their ground truth and the time of the evidence. `write_stream` writes an
H.264 MP4 (PyAV) and a JSON of the questions, so the same files feed every ingest path.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from streamvqa.models.grounded.vision import COLOURS, POSITIONS, SHAPES
from streamvqa.synth.scenes import Obj, Scene, render_scene


@dataclass
class Event:
    """Something shown from `t` for `duration` seconds: an object (shape set) or a digit."""

    t: float
    duration: float
    shape: str | None = None
    colour: str | None = None
    position: str | None = None
    size: float = 0.12
    digit: int | None = None
    digit_colour: str = "white"

    @property
    def kind(self) -> str:
        return "digit" if self.digit is not None else "object"

    def active(self, t: float) -> bool:
        return self.t <= t < self.t + self.duration


@dataclass
class Stream:
    """A whole synthetic stream; frames are rendered on demand from it."""

    seed: int
    duration: float
    fps: float = 1.0
    width: int = 128
    height: int = 128
    background: tuple[int, int, int] = (110, 110, 110)
    drift: tuple[float, float, float] = (12.0, 12.0, 12.0)
    drift_period: float = 240.0
    noise: float = 5.0
    events: list[Event] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return int(math.floor(self.duration * self.fps + 1e-9))

    def times(self) -> list[float]:
        return [i / self.fps for i in range(self.n_frames)]


def stream_scene(stream: Stream, t: float, index: int) -> Scene:
    """The scene at time t: drifting background plus the events active then."""
    phase = 2 * math.pi * t / stream.drift_period
    bg = tuple(
        int(np.clip(b + d * math.sin(phase + k * 2.1), 0, 255))
        for k, (b, d) in enumerate(zip(stream.background, stream.drift, strict=True))
    )
    grad = (18.0 * math.sin(phase * 0.7), 18.0 * math.cos(phase * 0.5))
    objects, digit, digit_colour = [], None, "white"
    for ev in stream.events:
        if not ev.active(t):
            continue
        if ev.kind == "digit":
            digit, digit_colour = ev.digit, ev.digit_colour
        else:
            objects.append(Obj(ev.shape, ev.colour, ev.position, size=ev.size))  # type: ignore[arg-type]
    return Scene(objects=objects, digit=digit, digit_colour=digit_colour, background=bg,  # type: ignore[arg-type]
                 gradient=grad, noise=stream.noise, seed=(stream.seed * 1_000_003 + index) % (2**31 - 1))


def render_stream_frame(stream: Stream, index: int) -> np.ndarray:
    """Frame `index` (at t = index / fps) as uint8 RGB [H, W, 3]."""
    t = index / stream.fps
    return render_scene(stream_scene(stream, t, index), stream.width, stream.height)


def random_stream(seed: int, minutes: float = 10.0, fps: float = 1.0, width: int = 128, height: int = 128,
                  n_objects: int | None = None, n_digits: int | None = None) -> Stream:
    """A stream of `minutes` with 2-5 single-object events (distinct shapes) and 1-3 digit events."""
    rng = np.random.default_rng(seed)
    duration = minutes * 60.0
    n_obj = int(rng.integers(2, 6)) if n_objects is None else n_objects
    n_dig = int(rng.integers(1, 4)) if n_digits is None else n_digits
    n_ev = n_obj + n_dig
    kinds = ["object"] * n_obj + ["digit"] * n_dig
    rng.shuffle(kinds)
    # evenly spaced slots with jitter: events never overlap and all end before the stream does
    slot = duration / n_ev
    shapes = list(rng.choice(SHAPES, size=n_obj, replace=False))
    events: list[Event] = []
    for i, kind in enumerate(kinds):
        dur = float(rng.integers(3, 7))
        start = i * slot + float(rng.uniform(0.1, max(0.2, slot - dur - 1.0)))
        start = math.floor(start * fps) / fps
        if kind == "digit":
            events.append(Event(start, dur, digit=int(rng.integers(0, 10)),
                                digit_colour=str(rng.choice(["white", "black"]))))
        else:
            events.append(Event(start, dur, shape=str(shapes.pop()), colour=str(rng.choice(COLOURS)),
                                position=str(rng.choice(POSITIONS)), size=float(rng.uniform(0.1, 0.14))))
    base = int(rng.integers(85, 150))
    return Stream(
        seed=seed, duration=duration, fps=fps, width=width, height=height,
        background=tuple(int(base + rng.integers(-12, 13)) for _ in range(3)),  # type: ignore[arg-type]
        drift=tuple(float(rng.uniform(5, 15)) for _ in range(3)),  # type: ignore[arg-type]
        drift_period=float(rng.uniform(120, 400)), noise=float(rng.uniform(2, 7)), events=events,
    )


def needle_questions(stream: Stream, rng: np.random.Generator | None = None) -> list[dict]:
    """Questions about past events, asked at the end of the stream, with answer and evidence times."""
    rng = rng or np.random.default_rng(stream.seed + 17)
    objs = [e for e in stream.events if e.kind == "object"]
    digits = [e for e in stream.events if e.kind == "digit"]
    qs: list[dict] = []

    def add(kind: str, q: str, a: str, evidence: list[Event]) -> None:
        qs.append({"type": kind, "question": q, "answer": a, "asked_at": stream.duration,
                   "evidence": [[e.t, e.t + e.duration] for e in evidence]})

    for e in objs:
        add("colour_of", f"What colour was the {e.shape} that appeared?", str(e.colour), [e])
    for e in objs[:2]:
        add("position_of", f"Where did the {e.shape} appear?", str(e.position), [e])
    if digits:
        last = max(digits, key=lambda e: e.t)
        add("latest_digit", "What digit was shown most recently?", str(last.digit), [last])
    if len(objs) >= 2:
        idx = rng.choice(len(objs), size=2, replace=False)
        a, b = objs[int(idx[0])], objs[int(idx[1])]
        first = a if a.t < b.t else b
        add("first_of", f"What appeared first, the {a.shape} or the {b.shape}?", str(first.shape), [a, b])
    return qs


def stream_to_dict(stream: Stream) -> dict:
    d = asdict(stream)
    d["events"] = [asdict(e) for e in stream.events]
    return d


def stream_from_dict(d: dict) -> Stream:
    d = dict(d)
    events = [Event(**e) for e in d.pop("events")]
    for k in ("background", "drift"):
        d[k] = tuple(d[k])
    return Stream(events=events, **d)


def write_stream(stream: Stream, mp4_path: Path, json_path: Path | None = None, crf: int = 18) -> Path:
    """Encode the stream as H.264 MP4 (yuv420p, one frame per 1/fps) and write its questions JSON."""
    import av

    mp4_path = Path(mp4_path)
    mp4_path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(stream.fps).limit_denominator(1000)
    with av.open(str(mp4_path), mode="w") as container:
        vs = container.add_stream("libx264", rate=rate)
        vs.width, vs.height, vs.pix_fmt = stream.width, stream.height, "yuv420p"
        vs.options = {"crf": str(crf), "preset": "veryfast"}
        for i in range(stream.n_frames):
            frame = av.VideoFrame.from_ndarray(render_stream_frame(stream, i), format="rgb24")
            frame.pts = i  # in units of 1/rate, the encoder's time base
            for packet in vs.encode(frame):
                container.mux(packet)
        for packet in vs.encode():
            container.mux(packet)
    json_path = Path(json_path) if json_path is not None else mp4_path.with_suffix(".json")
    json_path.write_text(json.dumps({"video": mp4_path.name, "stream": stream_to_dict(stream),
                                     "questions": needle_questions(stream)}, indent=2))
    return json_path
