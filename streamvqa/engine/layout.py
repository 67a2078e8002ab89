"""Stage 8: where blocks sit when they are put back into a cache.

Blocks keep the positions they were encoded at. Keys are stored before RoPE, so placing a block
anywhere is one rotation (`engine/window.place`); every strategy moves each block *as a whole*,
so its internal structure (M-RoPE grids included) is unchanged and only its offset changes.

- *contiguous* (ReKV, StreamKV): the blocks back to back after the sink; gaps are closed.
- *original* (InfiniPot-V, StreamMem): the stream positions; the question follows the stream.
- *time-aware* (ours, methods.md §13.7): back to back, but the gap before each block (and after
  the last one, up to the question) keeps a compressed trace of what was skipped:
  ``min(max_gap, round(gap_scale * skipped))`` positions, where `skipped` is the number of stream
  positions between the two blocks. At 1 unit per frame positions grow linearly with time, so
  position distance stays monotone in elapsed time while the span stays bounded (at most
  ``max_gap`` per gap), which keeps the re-laid cache inside the position range the model knows.
  ``gap_scale=0`` is *contiguous*; ``gap_scale=1, max_gap=None`` is *original*. Every unit also
  carries its timestamp text (``[hh:mm:ss]``, `models/template.py`), so retrieved moments
  are dated in words as well as in positions.

A layout is called as ``layout(blocks, start, now)``: `start` is the first position after the
sink, `now` the stream's next position (where the question would go without retrieval). It
returns each block's positions and the position the question starts at.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from streamvqa.store.block import Block

Layout = Callable[..., tuple[list[torch.Tensor], int]]

# time-aware defaults: a tenth of the skipped span, at most 256 positions per gap (about nine
# frames of the default model); ours, not from a paper
GAP_SCALE = 0.1
MAX_GAP = 256


def contiguous(blocks: list[Block], start: int, now: int | None = None) -> tuple[list[torch.Tensor], int]:
    """Positions for `blocks` laid back to back from `start`; returns them and the next position."""
    out, cursor = [], start
    for b in blocks:
        out.append(b.positions - b.pos_start + cursor)
        cursor += b.extent
    return out, cursor


def original(blocks: list[Block], start: int, now: int | None = None) -> tuple[list[torch.Tensor], int]:
    end = max([start] + [b.pos_end for b in blocks] + ([now] if now is not None else []))
    return [b.positions for b in blocks], end


def time_aware(
    blocks: list[Block], start: int, now: int | None = None, gap_scale: float = GAP_SCALE, max_gap: int | None = MAX_GAP
) -> tuple[list[torch.Tensor], int]:
    """Back to back with compressed gaps for the skipped stream spans (see the module docstring)."""

    def gap(skipped: int) -> int:
        g = round(gap_scale * max(0, skipped))
        return g if max_gap is None else min(max_gap, g)

    out, cursor, prev_end = [], start, start  # the first block's gap is measured from the sink
    for b in blocks:
        cursor += gap(b.pos_start - prev_end)
        out.append(b.positions - b.pos_start + cursor)
        cursor += b.extent
        prev_end = b.pos_end
    if now is not None:
        cursor += gap(now - prev_end)  # how long ago the last retrieved moment was
    return out, cursor


LAYOUTS: dict[str, Layout] = {"contiguous": contiguous, "original": original, "time-aware": time_aware}


def layout_for(name: str, gap_scale: float = GAP_SCALE, max_gap: int | None = MAX_GAP) -> Layout:
    """The layout called `name`, with the time-aware parameters bound."""
    if name not in LAYOUTS:
        raise ValueError(f"unknown position strategy {name!r}; known: {', '.join(LAYOUTS)}")
    if name == "time-aware":
        return partial(time_aware, gap_scale=gap_scale, max_gap=max_gap)
    return LAYOUTS[name]
