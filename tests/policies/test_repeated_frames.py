"""Stage 1 of `hybrid`: a frame is dropped as a repeat only when every visual token repeats the
last kept frame's; StreamMem's mean-token test drops a frame that changed one token."""

import numpy as np
import pytest
import torch

from streamvqa.models.base import Segment
from streamvqa.policies.presets import MethodConfig, resolve
from streamvqa.policies.registry import build_units
from streamvqa.policies.repeated_frames import RepeatedFrames
from streamvqa.policies.streammem import RedundantFrames
from streamvqa.policies.units import FrameItem, visual_mean

# word embeddings share a large common direction: a caption's 12 tokens, and other digits, are near it
CAPTION = 1 + 0.2 * torch.randn(12, 16, generator=torch.Generator().manual_seed(0))
DIGIT = 1  # the caption's digit slot


def digit(seed: int) -> torch.Tensor:
    return 1 + 0.2 * torch.randn(16, generator=torch.Generator().manual_seed(seed))


def frame(digit_token: torch.Tensor | None = None, n: int = 12) -> list[Segment]:
    tokens = CAPTION[:n].clone()
    if digit_token is not None:
        tokens[DIGIT] = digit_token
    return [Segment(embeds=tokens)]


def item(piece: list[Segment]) -> FrameItem:
    return FrameItem(piece, visual_mean(piece), 0.0, 0.0)


def test_one_changed_token_is_a_new_frame_only_token_by_token():
    first, same, changed, shorter = item(frame()), item(frame()), item(frame(digit(1))), item(frame(n=11))
    by_tokens, by_mean = RepeatedFrames(0.99), RedundantFrames(0.99)
    assert by_tokens.redundant(first, same) and by_mean.redundant(first, same)
    assert not by_tokens.redundant(first, changed)
    assert by_mean.redundant(first, changed)  # the mean of 12 tokens hides the new digit
    assert not by_tokens.redundant(first, shorter)  # another number of tokens: always new
    assert not by_tokens.redundant(item([]), first)  # nothing to compare with


def test_hybrid_keeps_a_moment_that_changed_one_token():
    digits = [digit(1), digit(2)]
    pieces = [frame(digits[0]), frame(digits[0]), frame(digits[1]), frame(digits[1]), frame(digits[0])]

    def vision(frames, t):  # the caption of frame t
        return pieces[int(t)]

    image = np.zeros((4, 4, 3), np.uint8)
    kept = {}
    for by in ("tokens", "mean"):
        units = build_units(resolve("hybrid", {"frame_filter_by": by}), vision)
        kept[by] = [u.t0 for t in range(5) for batch in units.push(image, float(t)) for u in batch.units]
    assert resolve("hybrid").frame_filter_by == "tokens"
    assert kept["tokens"] == [0.0, 2.0, 4.0]  # each change of digit is a frame; its repeats are not
    assert kept["mean"] == [0.0]  # StreamMem's test saw one scene


def test_an_unknown_comparison_is_refused():
    with pytest.raises(ValueError):
        MethodConfig(frame_filter=0.99, frame_filter_by="pixels")
