"""Retrieval policies pick, per layer, which stored blocks the answer cache is built from.

Like kvpress presses: a subclass states its idea in `score()`; the base class turns scores into
a per-layer selection in time order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RetrievalContext:
    """What a policy may look at: the question's mean pre-RoPE query per layer, the stream's
    representative keys, and which blocks are still in the encoder's local window."""

    query: torch.Tensor  # [layers, heads * head_dim]
    rep_keys: torch.Tensor  # [blocks, layers, kv_heads, head_dim]
    block_ids: list[int]  # time order
    window_ids: list[int]  # blocks in the local window (most recent)


class Retriever:
    """Base: per-layer top-k of `score()`; k = all blocks when `topk` is None."""

    per_layer = True

    def __init__(self, topk: int | None = None) -> None:
        self.topk = topk

    def score(self, ctx: RetrievalContext) -> torch.Tensor:
        """[layers, blocks] relevance; higher is better."""
        raise NotImplementedError

    def select(self, ctx: RetrievalContext) -> list[list[int]]:
        """Per layer, the chosen block ids in time order."""
        n_layers, n_blocks = ctx.query.shape[0], len(ctx.block_ids)
        if self.topk is None or self.topk >= n_blocks:
            return [list(ctx.block_ids) for _ in range(n_layers)]
        scores = self.score(ctx)
        if not self.per_layer:
            scores = scores.mean(0, keepdim=True).expand(n_layers, -1)
        top = scores.topk(self.topk, dim=1).indices.sort(dim=1).values
        return [[ctx.block_ids[i] for i in row.tolist()] for row in top]


class AllBlocks(Retriever):
    """Every block, every layer: the exact (full-context) mode."""

    def __init__(self) -> None:
        super().__init__(None)


class WindowOnly(Retriever):
    """No retrieval: answer from the local window (sliding-window baseline, compact caches)."""

    def __init__(self) -> None:
        super().__init__(None)

    def select(self, ctx: RetrievalContext) -> list[list[int]]:
        return [list(ctx.window_ids) for _ in range(ctx.query.shape[0])]
