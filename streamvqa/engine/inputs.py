"""Each unit's LM input embeddings, kept on the host beside (or instead of) its KV block.

Two things read them: an answer recomputed from inputs (`answer_from="inputs"`: the chosen
units prefilled afresh, in time order, after the sink) and input-matching retrieval
(`policies/retrieval/input_match.py`). They are what the model was given, so a recomputed
answer sees each unit as offline inference would, without what the stream's other frames
wrote into its keys and values at encode time. They are ~20x smaller than KV for the default
model (12 tokens x 576 values against 30 layers x K,V x 3 heads x 64), and each unit keeps its
representative keys too, so KV-scored retrievers (ReKV) still rank units no store holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from streamvqa.engine.layout import contiguous
from streamvqa.store.base import StreamIndex


@dataclass(frozen=True)
class UnitInputs:
    embeds: torch.Tensor  # [n, hidden], host, after pre-LLM reduction
    positions: torch.Tensor  # [P, n] stream positions
    pos_start: int
    pos_end: int
    t_start: float
    t_end: float
    rep_keys: torch.Tensor  # [layers, kv_heads, head_dim], the block's

    @property
    def extent(self) -> int:  # positions the unit spans (as `Block.extent`: `layout.contiguous` lays both out)
        return self.pos_end - self.pos_start

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in (self.embeds, self.positions, self.rep_keys))


class InputMemory:
    def __init__(self) -> None:
        self.units: dict[int, UnitInputs] = {}  # insertion order is time order
        self._nbytes = 0

    def add(self, index: int, unit: UnitInputs) -> None:
        self.units[index] = unit
        self._nbytes += unit.nbytes

    def nbytes(self) -> int:
        return self._nbytes

    def evict_to(self, max_bytes: int) -> int:
        """Drop the oldest units until at most `max_bytes` are kept (a stream's store budget);
        how many were dropped."""
        dropped = 0
        while self.units and self._nbytes > max_bytes:
            self._nbytes -= self.units.pop(next(iter(self.units))).nbytes
            dropped += 1
        return dropped

    def index(self) -> StreamIndex:
        """Every unit as a retrieval candidate (time order), like a store's index."""
        ids = sorted(self.units)
        rep = torch.stack([self.units[i].rep_keys for i in ids]) if ids else torch.empty(0)
        return StreamIndex(ids, rep, [(self.units[i].t_start, self.units[i].t_end) for i in ids])

    def embeds(self, ids: list[int]) -> list[torch.Tensor]:
        """Each unit's input embeddings; none (no tokens) for a unit whose inputs were dropped."""
        return [self.units[i].embeds if i in self.units else torch.zeros(0, 1) for i in ids]

    def laid_out(self, ids: list[int], start: int) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]], int]:
        """The units' embeddings back to back [1, N, hidden] at contiguous positions from
        `start` (a unit keeps its own position structure: M-RoPE grids stay grids), each
        unit's (index, tokens), and the next free position. Units whose inputs were dropped
        (the store budget) are left out."""
        units = [self.units[i] for i in ids if i in self.units]
        if not units:
            return torch.empty(0), torch.empty(0), [], start
        positions, end = contiguous(units, start)
        order = [(i, int(self.units[i].embeds.shape[0])) for i in ids if i in self.units]
        return torch.cat([u.embeds for u in units]).unsqueeze(0), torch.cat(positions, dim=1), order, end
