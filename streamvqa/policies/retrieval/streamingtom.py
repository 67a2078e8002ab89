"""StreamingTOM group retrieval, OQM (Chen et al., CVPR 2026, arXiv 2510.18269).

StreamingTOM stores each frame's reduced tokens (G = 50 after CTR) as one 4-bit group and keeps
one full-precision representative per group and layer: the mean of the group's pre-RoPE keys.
At question time every layer independently takes the groups most similar to the question's mean
pre-RoPE query (cosine, as in the code), as many as fit `retrieve_tokens` (12,544 = 64 x 196,
i.e. 251 groups of 50), sorted by time; only those are dequantized.

Here a group is a block (one stream unit after stage-2 reduction) and its representative is
`Block.rep_keys`, kept unquantized beside the block as OQM does. Selection touches only the
index; the session then fetches the chosen blocks alone, and a quantized tier decodes (4-bit or
int8, `store/quant.py`) only what it returns, so nothing unselected is ever dequantized.

The authors' retrieval pass re-applies RoPE to keys that were stored already rotated
(methods.md §5, "quirk"), which perturbs the deeper layers' queries. That cannot happen here:
the question's query comes from a forward over the properly rotated hot window, the keys it is
compared with are position-free, and reconstruction rotates each stored key exactly once.

Defaults (README): OQM_RETRIEVAL_MAX_TOKENS 12544, group size 50 (= CTR_RETAIN_TOKENS).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field

from streamvqa.policies.retrieval._similarity import query_key_scores
from streamvqa.policies.retrieval.base import RetrievalContext, RetrievalOptions, Retriever, Selection
from streamvqa.store.block import Block

GROUP_TOKENS = 50  # OQM_GROUP_SIZE, used for blocks this retriever has not seen written


class GroupOptions(RetrievalOptions):
    retrieve_tokens: int = Field(12544, ge=1, description="tokens retrieved per layer (groups)")


class GroupRetriever(Retriever):
    Options = GroupOptions
    def __init__(self, retrieve_tokens: int = 12544) -> None:
        super().__init__(topk=1)
        self.retrieve_tokens = retrieve_tokens
        self.tokens: dict[int, int] = {}  # block index -> tokens in its group

    def observe(self, block: Block, frames: list[np.ndarray] | None = None) -> None:
        self.tokens[block.index] = block.n_tokens

    def groups(self, block_ids: list[int]) -> int:
        """How many groups the token budget buys (groups of the stream's mean size)."""
        sizes = [self.tokens.get(b, GROUP_TOKENS) for b in block_ids]
        return max(1, math.floor(self.retrieve_tokens / (sum(sizes) / len(sizes))))

    def needs_query(self, n_blocks: int) -> bool:
        return n_blocks > 0

    def score(self, ctx: RetrievalContext) -> torch.Tensor:
        return query_key_scores(ctx.query, ctx.rep_keys, "cosine")

    def select(self, ctx: RetrievalContext) -> Selection:
        self.topk = self.groups(ctx.block_ids)  # the base class takes the per-layer top-k in time order
        return super().select(ctx)
