"""Shared pieces: synthetic frames, engines per model, timing probes on the adapter, tables."""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from streamvqa.engine import Engine, EngineConfig
from streamvqa.policies.presets import PRESETS, MethodError, resolve

_ENGINES: dict[str, Engine] = {}


def presets(selected: list[str] | None = None) -> list[str]:
    """Every runnable preset (new presets appear automatically), or the selected ones."""
    return [p for p in PRESETS if (selected is None or p in selected) and p not in unavailable()]


def unavailable() -> dict[str, str]:
    """Presets that need configuration this run lacks (e.g. rekv-external's encoder), with why."""
    out = {}
    for name in PRESETS:
        try:
            resolve(name)  # checks what the preset needs (e.g. an external encoder)
        except MethodError as e:
            out[name] = f"{e.code}: {e}"
    return out


def engine(model: str) -> Engine:
    """One engine per model for the whole run (loading is not what we measure)."""
    if model not in _ENGINES:
        _ENGINES[model] = Engine(EngineConfig(model=model, device="cpu", dtype="float32"))
    return _ENGINES[model]


def close_engines() -> None:
    for e in _ENGINES.values():
        e.close()
    _ENGINES.clear()


def synth_stream(seed: int, seconds: float, fps: float = 1.0):
    """A `streamvqa.synth` stream of `seconds` (None when the synth package is missing)."""
    try:
        from streamvqa.synth import random_stream
    except ImportError:
        return None
    return random_stream(seed, minutes=seconds / 60.0, fps=fps)


def frames(seed: int, n: int, fps: float = 1.0, size: int = 128) -> Iterator[tuple[np.ndarray, float]]:
    """`n` synthetic frames (image, t) at `fps`: `streamvqa.synth` when present, else numpy shapes."""
    stream = synth_stream(seed, max(n, 1) / fps, fps)
    if stream is not None:
        from streamvqa.synth import render_stream_frame

        for i in range(n):
            yield render_stream_frame(stream, i), i / fps
        return
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 180, size=3)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        img = np.empty((size, size, 3), np.uint8)
        img[:] = (base + 20 * math.sin(i / 30)).clip(0, 255)
        cx, cy = (i * 7) % size, (i * 3) % size
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < 100] = rng.integers(0, 255, size=3)
        yield img, i / fps


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


class Probe:
    """Times the adapter's stages of encoding: vision (unit_piece + embed) and prefill (forward).

    Wraps the adapter's bound methods with instance attributes while active; everything else
    of an encode (block capture, store write, window retention) is the remainder of
    `encode_seconds_total`. Also keeps the last logits of a `forward(..., logits="last")`
    call whose input is longer than one token: the first token's distribution of an answer.
    """

    def __init__(self, adapter) -> None:
        self.adapter = adapter
        self.vision_s = 0.0
        self.prefill_s = 0.0
        self.first_logits = None

    def _wrap(self, name: str, kind: str):
        fn = getattr(self.adapter, name)

        def wrapped(*args, **kwargs):
            t = time.perf_counter()
            out = fn(*args, **kwargs)
            dt = time.perf_counter() - t
            if kind == "vision":
                self.vision_s += dt
            elif kwargs.get("logits") == "none":
                self.prefill_s += dt
            elif kwargs.get("logits") == "last" and args and args[0].shape[1] > 1:
                self.first_logits = out[0, -1].detach().float().clone()
            return out

        return wrapped

    @contextmanager
    def active(self) -> Iterator[Probe]:
        names = {"unit_piece": "vision", "embed": "vision", "forward": "forward"}
        for n, kind in names.items():
            setattr(self.adapter, n, self._wrap(n, kind))
        try:
            yield self
        finally:
            for n in names:
                self.adapter.__dict__.pop(n, None)

    def reset(self) -> None:
        self.vision_s = self.prefill_s = 0.0
        self.first_logits = None


def fmt(v: object) -> str:
    if isinstance(v, float):
        if v == 0 or 0.01 <= abs(v) < 1e5:
            return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"
        return f"{v:.2e}"
    if isinstance(v, int):
        return f"{v:,}"
    return "—" if v is None else str(v)


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A Markdown table of `rows` (dicts); columns default to the first row's keys."""
    if not rows:
        return "(no rows)\n"
    cols = columns or list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    out += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(out) + "\n"
