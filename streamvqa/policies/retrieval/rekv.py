"""ReKV internal retrieval (Di et al., ICLR 2025, arXiv 2503.00540).

Each block (one frame / unit) is represented per layer by the mean of its pre-RoPE keys, GQA
heads expanded and concatenated; at question time every layer independently takes the top-k
blocks by similarity to the mean pre-RoPE query of the question tokens, in time order.

Defaults: topk (`retrieve_size`) = 64 blocks, as the authors' code. Similarity: the code uses a
raw dot product (`get_cosine_similarity` does not normalise, although the paper says cosine);
ours defaults to cosine, which recalls the evidence better on the needle eval
(docs/architecture.md); `similarity="dot"` is the code's.
"""

from __future__ import annotations

import torch

from streamvqa.policies.retrieval._similarity import query_key_scores
from streamvqa.policies.retrieval.base import SIMILARITY, RetrievalContext, Retriever, Similarity, TopKOptions


class ReKVOptions(TopKOptions):
    similarity: Similarity = SIMILARITY


class ReKVRetriever(Retriever):
    Options = ReKVOptions

    def __init__(
        self, topk: int | None = 64, similarity: str = SIMILARITY, score_mass: float | None = None, min_blocks: int = 1
    ) -> None:
        super().__init__(topk, score_mass, min_blocks)
        if similarity not in ("dot", "cosine"):
            raise ValueError(f"similarity must be 'dot' or 'cosine', not {similarity!r}")
        self.similarity = similarity

    def score(self, ctx: RetrievalContext) -> torch.Tensor:
        return query_key_scores(ctx.query, ctx.rep_keys, self.similarity)
