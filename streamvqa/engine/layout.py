"""Stage 8: where blocks sit when they are put back into a cache.

Blocks keep the positions they were encoded at. *Contiguous* re-lays them one after another
(ReKV), each shifted as a whole so its internal structure (M-RoPE grids included) is unchanged;
*original* keeps the stream positions (InfiniPot-V). Keys are stored before RoPE, so placing a
block anywhere is one rotation.
"""

from __future__ import annotations

import torch

from streamvqa.store.block import Block


def contiguous(blocks: list[Block], start: int) -> tuple[list[torch.Tensor], int]:
    """Positions for `blocks` laid back to back from `start`; returns them and the next position."""
    out, cursor = [], start
    for b in blocks:
        out.append(b.positions - b.pos_start + cursor)
        cursor += b.extent
    return out, cursor


def original(blocks: list[Block], start: int) -> tuple[list[torch.Tensor], int]:
    end = max([start] + [b.pos_end for b in blocks])
    return [b.positions for b in blocks], end


LAYOUTS = {"contiguous": contiguous, "original": original}
