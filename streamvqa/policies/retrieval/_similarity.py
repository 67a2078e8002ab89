"""Shared scoring helper: a question's mean pre-RoPE query against representative keys."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def query_key_scores(query: torch.Tensor, keys: torch.Tensor, similarity: str = "dot") -> torch.Tensor:
    """query [layers, heads * d], keys [n, layers, kv_heads, d] -> [layers, n].

    GQA: each KV head is repeated for the query heads it serves, then heads are concatenated
    (ReKV's `block_k` layout), so a dot product sums the per-head attention logits."""
    n, n_layers, kv_heads, d = keys.shape
    heads = query.shape[1] // d
    k = keys.float().repeat_interleave(heads // kv_heads, dim=2).reshape(n, n_layers, heads * d)
    q = query.float()
    if similarity == "cosine":
        k, q = F.normalize(k, dim=-1), F.normalize(q, dim=-1)
    elif similarity != "dot":
        raise ValueError(f"similarity must be 'dot' or 'cosine', not {similarity!r}")
    return torch.einsum("ld,nld->ln", q, k)
