"""Synthetic scenes and streams with known answers, deterministic by seed.

- `scenes`: single frames of one to three coloured shapes and an optional big digit, with labels.
- `qa`: templated question/answer pairs per type for a scene.
- `streams`: long uneventful videos with events at known times, needle questions, MP4 + JSON.
"""

from streamvqa.synth.qa import QA, scene_questions
from streamvqa.synth.scenes import Obj, Scene, random_scene, render_scene, scene_labels
from streamvqa.synth.streams import (
    Event,
    Stream,
    needle_questions,
    random_stream,
    render_stream_frame,
    write_stream,
)

__all__ = [
    "QA",
    "Event",
    "Obj",
    "Scene",
    "Stream",
    "needle_questions",
    "random_scene",
    "random_stream",
    "render_scene",
    "render_stream_frame",
    "scene_labels",
    "scene_questions",
    "write_stream",
]
