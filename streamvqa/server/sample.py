"""A short synthetic H.264 sample video for the demo (``streamvqa.synth`` when available)."""

from __future__ import annotations

import json
import logging
from fractions import Fraction
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_QUESTION = "What shapes and colours appeared in the video?"

_COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 80, 230), "yellow": (240, 220, 40)}


def _shapes_frame(i: int, fps: int, width: int, height: int) -> np.ndarray:
    """Frame ``i``: a grey background, a coloured square and a coloured disc that move."""
    img = np.full((height, width, 3), 110, np.uint8)
    names = list(_COLOURS)
    colour = _COLOURS[names[(i // (2 * fps)) % len(names)]]  # the square changes colour every 2 s
    x = int((i * 4) % max(1, width - 60))
    img[40:100, x : x + 60] = colour
    yy, xx = np.mgrid[0:height, 0:width]
    cx, cy = width - 60, height - 60 - int((i * 2) % max(1, height - 120))
    img[(xx - cx) ** 2 + (yy - cy) ** 2 < 30**2] = _COLOURS["yellow"]
    return img


def write_shapes_mp4(path: Path, seconds: float = 8.0, fps: int = 10, width: int = 320, height: int = 240) -> Path:
    """Coloured moving shapes as an H.264 MP4 written with PyAV."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.options = {"preset": "ultrafast", "crf": "20", "g": str(fps)}
        for i in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(_shapes_frame(i, fps, width, height), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


# What the default model was trained to see (docs/model_card.md); said wherever a sample is offered.
CAN_SEE = ("The default model sees synthetic scenes only: up to three shapes (circle, square, triangle, "
           "star, cross) in eight colours at five places, and a big digit. It does not describe real footage.")


def write_synth_sample(mp4: Path, seconds: float = 60.0, seed: int = 7) -> list[dict]:
    """A ``streamvqa.synth`` stream (objects and digits at known times) as H.264 ``mp4``, its
    questions JSON beside it; returns the questions (each with its answer and evidence times)."""
    from streamvqa.synth import random_stream, write_stream

    stream = random_stream(seed=seed, minutes=seconds / 60.0, fps=2.0, width=256, height=256)
    return json.loads(Path(write_stream(stream, mp4)).read_text())["questions"]


def write_sample(out: Path, seconds: float = 60.0, seed: int = 7) -> str:
    """``streamvqa sample``: write the sample and return what to print (questions, answers, commands)."""
    out = Path(out)
    questions = write_synth_sample(out, seconds, seed)
    lines = [f"wrote {out} ({seconds:g} s, 256x256, 2 fps) and its questions with answers: {out.with_suffix('.json')}",
             CAN_SEE, "Questions it can answer (expected answer after #):"]
    lines += [f"  streamvqa ask-file {out} {json.dumps(q['question'])}  # {q['answer']}" for q in questions]
    return "\n".join(lines)


def write_sample_video(directory: Path, seconds: float = 24.0) -> tuple[Path, str]:
    """Write the demo video into ``directory``; returns ``(mp4 path, a question about it)``.

    Uses ``streamvqa.synth`` (scenes with known answers) when it is importable, else coloured shapes.
    """
    directory = Path(directory)
    try:
        questions = write_synth_sample(directory / "sample.mp4", seconds, seed=7)
        question = str(questions[0].get("question") or DEFAULT_QUESTION) if questions else DEFAULT_QUESTION
        return directory / "sample.mp4", question
    except Exception as e:  # synth missing or changed: fall back to the built-in shapes
        log.info("synth sample unavailable (%s); writing coloured shapes", e)
    return write_shapes_mp4(directory / "shapes.mp4", seconds=min(seconds, 8.0)), DEFAULT_QUESTION
