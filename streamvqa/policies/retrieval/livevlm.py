"""LiveVLM Position-agnostic Retrieval, PaR (Ning et al., DAC 2026, arXiv 2505.15269 v2).

Index: every block is cut into pages of C consecutive tokens; a page is represented per layer
by the mean of its *position-free* keys (our blocks store keys before RoPE, so nothing has to
be un-rotated). Retrieval: the question's mean query is scored against every page (pooled
attention logits, a dot product), the top `ratio` of pages are taken per layer, and the
short-term memory (the hot window: the most recent units, LiveVLM's FIFO) is always included.
Positions are re-applied afterwards by the session's layout (stage 8), which is what the paper's
"PaR without positions in the keys" ablation asks for.

The engine assembles whole blocks, so pages select blocks: a block's score in a layer is its
best page's, and each layer takes as many blocks as the top-ratio pages touch on average over
layers (equal across layers: one attention mask serves them all).

Defaults (paper): C = 16 tokens, ratio = 0.4; pages scored by cosine (ours; `similarity="dot"`
is the pooled logit).
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


def page_keys(keys: torch.Tensor, page_size: int) -> torch.Tensor:
    """[layers, kv_heads, n, d] pre-RoPE keys -> [pages, layers, kv_heads, d] page means (the last
    page may be shorter)."""
    pages = [p.float().mean(dim=2) for p in keys.split(page_size, dim=2)]
    return torch.stack(pages)


class PaROptions(RetrievalOptions):
    page_size: int = Field(16, ge=1, description="tokens per page")
    page_ratio: float = Field(0.4, gt=0, le=1, description="fraction of pages retrieved")
    similarity: Similarity = SIMILARITY


class PaRRetriever(Retriever):
    Options = PaROptions

    def __init__(self, page_size: int = 16, page_ratio: float = 0.4, similarity: str = SIMILARITY) -> None:
        super().__init__(topk=1)  # sizes come from the page ratio
        if page_size < 1 or not 0 < page_ratio <= 1:
            raise ValueError("page_size must be >= 1 and page_ratio in (0, 1]")
        self.page_size = page_size
        self.ratio = page_ratio
        self.similarity = similarity
        self.pages: dict[int, torch.Tensor] = {}  # block index -> [pages, layers, kv_heads, d]

    def observe(self, block: Block, frames: list[np.ndarray] | None = None) -> None:
        self.pages[block.index] = page_keys(block.keys, self.page_size).to(block.rep_keys.dtype)

    def needs_query(self, n_blocks: int) -> bool:
        return n_blocks > 0

    def score(self, ctx: RetrievalContext) -> torch.Tensor:
        """Per layer, each block's best page score [layers, blocks]."""
        return self.page_scores(ctx)[0]

    def page_scores(self, ctx: RetrievalContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(block scores [layers, blocks], page scores [layers, pages], page -> block column)."""
        reps = [self.pages.get(b, ctx.rep_keys[i : i + 1]) for i, b in enumerate(ctx.block_ids)]  # unseen: one page
        owner = torch.cat([torch.full((len(r),), i) for i, r in enumerate(reps)])
        pages = query_key_scores(ctx.query, torch.cat(reps).to(ctx.rep_keys.dtype), self.similarity)
        best = torch.full((pages.shape[0], len(reps)), float("-inf"))
        best = best.scatter_reduce(1, owner.expand_as(pages), pages, reduce="amax")
        return best, pages, owner

    def select(self, ctx: RetrievalContext) -> Selection:
        n_layers, n = ctx.query.shape[0], len(ctx.block_ids)
        short = [i for i, b in enumerate(ctx.block_ids) if b in set(ctx.window_ids)]
        long = [i for i in range(n) if i not in set(short)]
        if not long:
            every = list(ctx.block_ids)
            return Selection([every] * n_layers, dict.fromkeys(every, 1.0))
        best, pages, owner = self.page_scores(ctx)
        in_long = torch.isin(owner, torch.tensor(long))
        n_pages = int(in_long.sum())
        take = max(1, math.ceil(self.ratio * n_pages))
        page_top = pages[:, in_long].topk(take, dim=1).indices
        long_owner = owner[in_long]
        hit = [len(set(long_owner[row].tolist())) for row in page_top]  # blocks touched per layer
        k = min(len(long), max(1, round(sum(hit) / n_layers)))
        long_scores = best.clone()
        long_scores[:, short] = float("-inf")
        rows = [short + row.tolist() for row in long_scores.topk(k, dim=1).indices]
        return self.evidence(ctx.block_ids, rows, self.zscore(best))
