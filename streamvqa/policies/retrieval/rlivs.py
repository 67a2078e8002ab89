"""rLiVS caption retrieval (Dorovatas et al., NeurIPS 2025, arXiv 2510.17364).

rLiVS keeps its long-term memory as text: one caption per clip (written by the retention
policy; here `Caption(t_start, t_end, text)` entries in `ctx.captions`). Each caption is indexed
by the mean of its LLM input-token embeddings, the question likewise (no external encoder). If
all captions fit `caption_tokens` they are all used; otherwise they are ranked by maximal
marginal relevance,

    MMR(c) = lambda * cos(c, q) - (1 - lambda) * max_{s in picked} cos(c, s),

and added until the budget is reached, then put back in time order. The session prefills them
(with their time ranges) after the blocks, so the model reads the memory in stream order.

Visual blocks: by default only the short-term memory (the hot window) is kept beside the
captions, as rLiVS keeps its recent selected tokens; with `blocks` (a block retriever, e.g.
ReKV top-k) retrieved blocks are combined with the captions.

Defaults (code): lambda = 0.5, budget 20,000 caption tokens (the paper says 10K).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from streamvqa.policies.retrieval.base import (
    SIMILARITY,
    Caption,
    RetrievalContext,
    Retriever,
    Selection,
    Similarity,
)
from streamvqa.policies.retrieval.rekv import ReKVOptions, ReKVRetriever


def mmr(relevance: torch.Tensor, similarity: torch.Tensor, costs: list[int], budget: int, lam: float) -> list[int]:
    """Greedy MMR order under a budget: indices picked (in pick order) until the next pick would
    not fit. relevance [n], similarity [n, n] (cosine), costs [n]."""
    picked: list[int] = []
    left = set(range(len(costs)))
    spent = 0
    while left:
        cand = sorted(left)
        redundancy = (
            similarity[cand][:, picked].max(dim=1).values if picked else torch.zeros(len(cand))
        )
        value = lam * relevance[cand] - (1 - lam) * redundancy
        best = cand[int(value.argmax())]
        if spent + costs[best] > budget:
            break
        picked.append(best)
        spent += costs[best]
        left.remove(best)
    return picked


class CaptionOptions(ReKVOptions):
    caption_tokens: int = Field(20000, ge=1, description="caption token budget")
    mmr_lambda: float = Field(0.5, ge=0, le=1, description="MMR relevance weight")
    caption_blocks: bool = Field(False, description="add ReKV top-k blocks (topk, similarity, ...) to the captions")
    similarity: Similarity = SIMILARITY


class CaptionRetriever(Retriever):
    Options = CaptionOptions

    @classmethod
    def from_options(cls, options: CaptionOptions) -> CaptionRetriever:
        blocks = None
        if options.caption_blocks:
            blocks = ReKVRetriever(options.topk, options.similarity, options.score_mass, options.min_blocks)
        return cls(options.caption_tokens, options.mmr_lambda, blocks)

    def __init__(self, caption_tokens: int = 20000, mmr_lambda: float = 0.5, blocks: Retriever | None = None) -> None:
        super().__init__(topk=None)
        if not 0 <= mmr_lambda <= 1:
            raise ValueError("mmr_lambda must be in [0, 1]")
        self.caption_tokens = caption_tokens
        self.mmr_lambda = mmr_lambda
        self.blocks = blocks

    def needs_query(self, n_blocks: int) -> bool:
        return self.blocks is not None and self.blocks.needs_query(n_blocks)

    def pick_captions(self, ctx: RetrievalContext) -> list[Caption]:
        captions, embed = ctx.captions, ctx.embed_text
        if not captions:
            return []
        assert embed is not None, "caption retrieval needs ctx.embed_text (the session provides it)"
        emb, costs = embed([c.text for c in captions])
        if sum(costs) <= self.caption_tokens:
            return list(captions)
        q, _ = embed([ctx.question])
        e = F.normalize(emb.float(), dim=-1)
        relevance = e @ F.normalize(q.float(), dim=-1)[0]
        order = mmr(relevance, e @ e.T, costs, self.caption_tokens, self.mmr_lambda)
        return [captions[i] for i in sorted(order)]  # back to time order

    def select(self, ctx: RetrievalContext) -> Selection:
        if self.blocks is not None:
            chosen = self.blocks.select(ctx)
        else:
            window = list(ctx.window_ids)
            chosen = Selection([window] * ctx.query.shape[0], dict.fromkeys(window, 1.0))
        chosen.captions = self.pick_captions(ctx)
        return chosen
