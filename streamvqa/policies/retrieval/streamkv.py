"""StreamKV retrieval (Chen et al., AAAI 2026, arXiv 2511.07278): layer-adaptive sizes.

Blocks are scored per layer like ReKV (mean pre-RoPE key against the question's mean query; the
code's raw dot product is `similarity="dot"`, ours defaults to cosine like ReKV's). Each layer then gets its own retrieval size (two passes in the
authors' `_calc_block_topk`):

1. per layer: z-score, softmax, sort descending, cumulative sum; a global mass p is bisected
   so that the layers' sizes K_l(p) sum to about L x `topk`;
2. each K_l is clamped to [max(1, topk(1 - temp)), min(topk(1 + temp), max_blocks)];
3. the `local_blocks` most recent blocks are always taken, plus the layer's top K_l - local of
   the rest, in time order.

Summary units (StreamKV's per-segment mean pseudo-frame; `Block.meta["summary"]`, written by
the retention policy) are in the index like any block and compete on score; they never count
as recent.

Defaults from `run_eval.sh`: retrieve_size 64, retrieve_temp 0.5 (32-96 per layer), ceiling
128, retrieve_local_size 8.

Each layer's cache holds its own K_l blocks: the session prefills such ragged caches one token at
a time (`engine/window.prefill`), so the sizes are real, not padded to a common length.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field

from streamvqa.policies.retrieval._similarity import query_key_scores
from streamvqa.policies.retrieval.base import (
    SIMILARITY,
    RetrievalContext,
    RetrievalOptions,
    Retriever,
    Selection,
    Similarity,
)
from streamvqa.store.block import Block


def adaptive_sizes(z: torch.Tensor, total: int, lo: int, hi: int, iters: int = 40) -> list[int]:
    """Per-layer sizes from z-scored scores [layers, n]: the fewest top blocks covering a softmax
    mass p, with p bisected so the sizes sum to about `total`, each clamped to [lo, hi]."""
    cdf = z.softmax(dim=1).sort(dim=1, descending=True).values.cumsum(dim=1)

    def sizes(p: float) -> torch.Tensor:
        return ((cdf < p).sum(dim=1) + 1).clamp(lo, hi)

    a, b = 0.0, 1.0
    for _ in range(iters):
        mid = (a + b) / 2
        if int(sizes(mid).sum()) < total:
            a = mid
        else:
            b = mid
    return sizes(b).tolist()


class StreamKVRetrievalOptions(RetrievalOptions):
    topk: int = Field(64, ge=1, description="mean blocks retrieved per layer (retrieve_size)")
    size_temp: float = Field(0.5, ge=0, lt=1, description="per-layer size range topk*(1 +- size_temp)")
    max_blocks: int = Field(128, ge=1, description="ceiling of a layer's retrieval size")
    local_blocks: int = Field(8, ge=0, description="most recent blocks always retrieved")
    similarity: Similarity = SIMILARITY


class StreamKVRetriever(Retriever):
    Options = StreamKVRetrievalOptions

    def __init__(
        self, topk: int = 64, size_temp: float = 0.5, max_blocks: int = 128, local_blocks: int = 8,
        similarity: str = SIMILARITY,
    ) -> None:
        super().__init__(topk)
        if not 0 <= size_temp < 1:
            raise ValueError("size_temp must be in [0, 1)")
        self.size_temp = size_temp
        self.max_blocks = max_blocks
        self.local_blocks = local_blocks
        self.similarity = similarity
        self.summary_ids: set[int] = set()

    def observe(self, block: Block, frames: list[np.ndarray] | None = None) -> None:
        if block.meta.get("summary"):
            self.summary_ids.add(block.index)

    def needs_query(self, n_blocks: int) -> bool:
        return n_blocks > 0

    def score(self, ctx: RetrievalContext) -> torch.Tensor:
        return query_key_scores(ctx.query, ctx.rep_keys, self.similarity)

    def select(self, ctx: RetrievalContext) -> Selection:
        n_layers, n = ctx.query.shape[0], len(ctx.block_ids)
        assert self.topk is not None
        lo = max(1, math.floor(self.topk * (1 - self.size_temp)))
        hi = min(n, math.floor(self.topk * (1 + self.size_temp)), self.max_blocks)
        if n <= lo:
            every = list(ctx.block_ids)
            return Selection([every] * n_layers, dict.fromkeys(every, 1.0))
        scores = self.score(ctx).float()
        z = self.zscore(scores)
        sizes = adaptive_sizes(z, n_layers * self.topk, min(lo, hi), hi)
        frames = [i for i, b in enumerate(ctx.block_ids) if b not in self.summary_ids]
        recent = frames[-self.local_blocks:] if self.local_blocks else []
        rows = []
        for layer, k in enumerate(sizes):
            rest = scores[layer].clone()
            rest[recent] = float("-inf")
            extra = max(0, k - len(recent))
            rows.append(recent + rest.topk(min(extra, n - len(recent))).indices.tolist())
        return self.evidence(ctx.block_ids, rows, z)
