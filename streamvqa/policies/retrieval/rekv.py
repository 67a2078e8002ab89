"""ReKV internal retrieval (Di et al., ICLR 2025, arXiv 2503.00540).

Each block (one frame / unit) is represented per layer by the mean of its pre-RoPE keys, GQA
heads expanded and concatenated; at question time every layer independently takes the top-k
blocks by similarity to the mean pre-RoPE query of the question tokens, in time order.

Defaults from the authors' code: topk (`retrieve_size`) = 64 blocks, similarity = raw dot
product (`get_cosine_similarity` does not normalise, although the paper says cosine; both are
offered, `similarity="cosine"` normalises).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from streamvqa.policies.retrieval.base import RetrievalContext, Retriever


class ReKVRetriever(Retriever):
    def __init__(
        self, topk: int | None = 64, similarity: str = "dot", score_mass: float | None = None, min_blocks: int = 1
    ) -> None:
        super().__init__(topk, score_mass, min_blocks)
        if similarity not in ("dot", "cosine"):
            raise ValueError(f"similarity must be 'dot' or 'cosine', not {similarity!r}")
        self.similarity = similarity

    def score(self, ctx: RetrievalContext) -> torch.Tensor:
        b, n_layers, kv_heads, d = ctx.rep_keys.shape
        heads = ctx.query.shape[1] // d
        keys = ctx.rep_keys.float().repeat_interleave(heads // kv_heads, dim=2).reshape(b, n_layers, heads * d)
        q = ctx.query.float()
        if self.similarity == "cosine":
            keys, q = F.normalize(keys, dim=-1), F.normalize(q, dim=-1)
        return torch.einsum("ld,bld->lb", q, keys)
