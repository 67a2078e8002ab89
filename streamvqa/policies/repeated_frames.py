"""Repeated frames (ours, `hybrid`'s stage 1): a frame is dropped before the LLM only when every
one of its visual tokens is nearly the one at the same place in the last kept frame.

StreamMem's filter (`streammem.RedundantFrames`) compares the frames' *mean* visual tokens. For
the default model a frame is a 12-token caption, and two moments that differ in one token (the
digit 8, then the digit 6; the same objects in another place) have means above 0.99 cosine: the
second moment was dropped and never seen again. Token by token, one changed token is a new frame.
A frame with another number of tokens is always new.

Default: cosine 0.99 (`frame_filter` in the preset), every token.
"""

from __future__ import annotations

import torch.nn.functional as F

from streamvqa.policies.units import FrameFilter, FrameItem, visual_tokens


class RepeatedFrames(FrameFilter):
    def __init__(self, delta: float = 0.99) -> None:
        self.delta = delta

    def redundant(self, previous: FrameItem, item: FrameItem) -> bool:
        a, b = visual_tokens(previous.piece), visual_tokens(item.piece)
        if a.shape != b.shape or a.shape[0] == 0:
            return False
        return float(F.cosine_similarity(a, b, dim=-1).min()) > self.delta
