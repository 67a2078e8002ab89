"""Templated single-frame question/answer pairs, one-word answers, derived from scene labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamvqa.models.grounded.vision import COLOURS, COUNT_WORDS, SHAPES
from streamvqa.synth.scenes import Scene

QA_TYPES = ("colour", "shape", "count", "position", "digit", "exists")
PLACE = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
         "centre": "in the centre"}


@dataclass
class QA:
    """One question with its ground-truth answer and type."""

    type: str
    question: str
    answer: str


def question_of_type(scene: Scene, kind: str, rng: np.random.Generator) -> QA:
    """A question of `kind` about `scene` (which has at least one object)."""
    objs = scene.objects
    o = objs[int(rng.integers(len(objs)))]
    if kind == "colour":
        unique = sum(x.shape == o.shape for x in objs) == 1
        if unique and rng.random() < 0.6:
            return QA(kind, f"What colour is the {o.shape}?", o.colour)
        return QA(kind, f"What colour is the object {PLACE[o.position]}?", o.colour)
    if kind == "shape":
        unique = sum(x.colour == o.colour for x in objs) == 1
        if unique and rng.random() < 0.6:
            return QA(kind, f"What shape is the {o.colour} object?", o.shape)
        return QA(kind, f"What shape is {PLACE[o.position]}?", o.shape)
    if kind == "count":
        return QA(kind, "How many objects are there?", COUNT_WORDS[len(objs)])
    if kind == "position":
        return QA(kind, f"Where is the {o.colour} {o.shape}?", o.position)
    if kind == "digit":
        return QA(kind, "What digit is shown?", "none" if scene.digit is None else str(scene.digit))
    if kind == "exists":
        if rng.random() < 0.5:
            return QA(kind, f"Is there a {o.colour} {o.shape}?", "yes")
        present = {(x.shape, x.colour) for x in objs}
        while True:  # a near miss: same shape in another colour, or same colour in another shape
            if rng.random() < 0.5:
                cand = (o.shape, str(rng.choice(COLOURS)))
            else:
                cand = (str(rng.choice(SHAPES)), o.colour)
            if cand not in present:
                return QA(kind, f"Is there a {cand[1]} {cand[0]}?", "no")
    raise ValueError(f"unknown question type {kind!r}")


def scene_questions(scene: Scene, rng: np.random.Generator, kinds: tuple[str, ...] = QA_TYPES) -> list[QA]:
    """One question of each kind in `kinds`."""
    return [question_of_type(scene, k, rng) for k in kinds]
