"""With the grounded default model, needle questions about a moment that has left the encoder's
sliding window are answered by `rekv` (it retrieves the moment from the store) and not by
`sliding-window` (which only has the window). Deterministic synthetic streams; a few cases."""

import pytest
import torch

from streamvqa.engine import Engine
from streamvqa.evals.common import normalise
from streamvqa.evals.needle import overlaps
from streamvqa.models.base import piece_len
from streamvqa.synth.streams import needle_questions, random_stream, render_stream_frame

WINDOW_FRAMES = 4  # both methods encode with the same window (in frames of the default model)
# Frames with nothing to see get no tokens (the default model), so only later events push the
# needle out of the window: the stream is cut just after the AFTER_EVENTS-th event past it.
AFTER_EVENTS = 2
# seeds of `random_stream` (cut after their first event, an object) and the question types
# asked about it; chosen with grounded-v2 (empty frames dropped), where rekv answers these and
# sliding-window does not (7000 dropped: its later window shows a red object too, so
# sliding-window's guess "red" is right by chance)
CASES = {7001: ["colour_of", "position_of"]}


def first_needle(seed: int, types: list[str] | None = None):
    """The stream cut after AFTER_EVENTS events past its first one, and the questions about it."""
    stream = random_stream(seed, minutes=1.0)
    events = sorted(stream.events, key=lambda e: e.t)
    first, last = events[0], events[AFTER_EVENTS]
    end = first.t + first.duration
    n = int((last.t + last.duration) * stream.fps) + 1
    frames = [(render_stream_frame(stream, i), i / stream.fps) for i in range(n)]
    questions = [q for q in needle_questions(stream)
                 if q["evidence"] == [[first.t, end]] and (types is None or q["type"] in types)]
    return frames, questions, end


@pytest.mark.parametrize("seed", list(CASES))
@torch.inference_mode()
def test_rekv_answers_a_needle_that_left_the_window_where_sliding_window_cannot(default_adapter, seed):
    frames, questions, needle_end = first_needle(seed, CASES[seed])
    assert len(questions) == len(CASES[seed]), "the first event of a case must be an object"
    per_frame = next(n for image, _ in frames if (n := piece_len(default_adapter.unit_piece([image], 0.0))))
    n_local = WINDOW_FRAMES * per_frame  # tokens of a frame with something to see (empty ones have none)
    engine = Engine(adapter=default_adapter)
    answers = {}
    for method, options in [("rekv", {"n_local": n_local, "topk": 4}), ("sliding-window", {"n_local": n_local})]:
        session = engine.open_stream(method, method=method, options=options)
        for image, t in frames:
            session.push_frame(image, t)
        window_start = min(b.t_start for b in session.get_blocks(session.window.block_ids))
        assert window_start > needle_end  # the needle has left the window
        answers[method] = [session.answer(q["question"], max_tokens=4) for q in questions]
        engine.close_stream(method)
    for q, rekv, window in zip(questions, answers["rekv"], answers["sliding-window"], strict=True):
        assert overlaps(rekv.evidence, q["evidence"])  # retrieval found the moment
        assert normalise(rekv.text) == normalise(q["answer"]), (q["question"], rekv.text)
        assert normalise(window.text) != normalise(q["answer"]), (q["question"], window.text)
        assert not overlaps(window.evidence, q["evidence"])
