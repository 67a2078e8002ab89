"""The default model gives a frame with nothing to see zero tokens: the engine counts it as
received and encoded but writes no block and spends no positions on it, and `full` stays exact
(offline generation over the same pieces drops the same frames)."""

import math

import pytest
import torch

from streamvqa.engine import Engine
from streamvqa.models.base import piece_len
from streamvqa.synth.streams import random_stream, render_stream_frame
from tests.engine.conftest import reference_tokens

# random_stream(7000): frame 0 is empty, an object shows in frames 1-5, frames 6-10 are empty
SEED, EVENT = 7000, range(1, 6)
QUESTION = "What colour was the object?"


def stream_frames(n: int = 9) -> list:
    stream = random_stream(SEED, minutes=1.0)
    return [(render_stream_frame(stream, i), i / stream.fps) for i in range(n)]


@torch.inference_mode()
def test_empty_frames_get_no_tokens(default_adapter):
    frames = stream_frames()
    empty = [f for i, (f, _) in enumerate(frames) if i not in EVENT]
    full = [f for i, (f, _) in enumerate(frames) if i in EVENT]
    assert default_adapter.unit_piece(empty[:1], 0.0) == []
    assert default_adapter.unit_piece(empty, 0.0) == []
    one = piece_len(default_adapter.unit_piece(full[:1], 1.0))
    assert one == 12
    # a unit mixing both: only the non-empty frames' tokens
    assert piece_len(default_adapter.unit_piece([empty[0], full[0], empty[1]], 0.0)) == one


@torch.inference_mode()
def test_full_stream_with_empty_frames_answers_like_offline_generation(default_adapter):
    frames = stream_frames()
    session = Engine(adapter=default_adapter).open_stream("s", method="full")
    prefix = session.tracker.next
    for image, t in frames:
        session.push_frame(image, t)
    stats = session.stats()
    assert stats.frames_received == stats.frames_encoded == len(frames)
    assert stats.last_frame_t == frames[-1][1]
    assert session.next_index == len(EVENT) == stats.units_encoded  # one block per non-empty frame
    assert session.tracker.next == prefix + 12 * len(EVENT)  # empty frames cost no positions
    index = session.store.index("s")
    assert not any(math.isnan(x) for x in index.rep_keys.float().flatten().tolist())
    answer = session.answer(QUESTION, max_tokens=8)
    assert answer.token_ids == reference_tokens(default_adapter, frames, QUESTION, 8)
    assert answer.evidence == [(float(i), float(i)) for i in EVENT]  # one block per frame
    early = session.answer(QUESTION, max_tokens=8, at=3.0)
    assert early.evidence == [(1.0, 1.0), (2.0, 2.0), (3.0, 3.0)]


@pytest.mark.parametrize("method", ["streamkv", "infinipot-v"])
@torch.inference_mode()
def test_policy_presets_skip_zero_token_frames(default_adapter, method):
    frames = stream_frames(11)  # ends on empty frames (6-10): a unit of them is flushed by the question
    session = Engine(adapter=default_adapter).open_stream("s", method=method)
    for image, t in frames:
        session.push_frame(image, t)
    answer = session.answer(QUESTION, max_tokens=4)
    stats = session.stats()
    assert stats.frames_received == stats.frames_encoded == len(frames)
    assert stats.last_frame_t == frames[-1][1]
    assert answer.evidence and all(1.0 <= a and b <= 5.0 for a, b in answer.evidence)
    assert answer.text


@torch.inference_mode()
def test_mixed_unit_through_a_policy_preset_keeps_only_the_non_empty_frames(default_adapter):
    frames = stream_frames(11)
    options = {"unit_frames": 4, "memory_tokens": 4096}
    session = Engine(adapter=default_adapter).open_stream("s", method="infinipot-v", options=options)
    prefix = session.tracker.next
    for image, t in frames:
        session.push_frame(image, t)
    session.flush()
    stats = session.stats()
    assert stats.frames_encoded == len(frames)
    # units 0-3 and 4-7 mix empty and non-empty frames; 8-10 are all empty: no unit
    assert stats.units_encoded == 2
    assert session.tracker.next == prefix + 12 * len(EVENT)
    assert session.answer(QUESTION, max_tokens=4).evidence == [(0.0, 3.0), (4.0, 7.0)]
