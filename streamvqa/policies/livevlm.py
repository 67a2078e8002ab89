"""LiveVLM v2 (Ning et al., DAC 2026, arXiv 2505.15269): a short-term FIFO of exact KV and a
long-term memory kept by Vision Sink Bucketing (VSB).

- Short-term memory: the most recent `short_term` tokens (the encoder's sliding window),
  always kept whole.
- VSB, when the memory exceeds M (12K tokens): the last r vision tokens of the newest unit are
  an observation window; S = mean over their rows of softmax(Q K^T / sqrt(d)) gives each cached
  token a vision-to-vision score (text-to-vision scores do not surface sink tokens). The memory's
  position range is split into N = M / B buckets (capacity B = 1); a token at position p goes to
  bucket floor((p - p_min) * N / (p_max - p_min + 1)).
  Phase 1: the top-R tokens by S are kept, wherever they fall. Phase 2: the others, in
  descending S, are kept while their bucket has room, until M are kept. Heads select separately;
  if the buckets leave a head short of M, its next best tokens fill it (equal counts per head).
- R is not given in our sources: default R = M / 2 [reading]. r is "small": default 16.
PaR retrieval (pages of position-free mean keys, top 40%) is the retrieval policy `livevlm`.
"""

from __future__ import annotations

import torch
from pydantic import Field

from streamvqa.policies.memory import LayerMemory, Options, RetainContext, Retention, TokenMemory, attention


class VSBOptions(Options):
    observation: int = Field(16, ge=1, description="r: last vision tokens whose attention scores the memory")
    bucket_capacity: int = Field(1, ge=1, description="B: tokens per position bucket")
    phase1_fraction: float = Field(0.5, ge=0, le=1, description="R / M: kept by score alone (phase 1)")
    short_term: int = Field(2048, ge=0, description="recent tokens always kept (short-term FIFO)")


def vsb_select(scores: torch.Tensor, positions: torch.Tensor, budget: int, capacity: int, phase1: int,
               forced: torch.Tensor) -> torch.Tensor:
    """Vision Sink Bucketing for one head: scores [n], positions [n] (first row), `forced` [n]
    bool always kept. Returns the kept indices (ascending), exactly min(budget, n) of them."""
    n = scores.numel()
    if n <= budget:
        return torch.arange(n)
    n_buckets = max(1, budget // capacity)
    lo, hi = int(positions.min()), int(positions.max())
    bucket = ((positions - lo) * n_buckets // (hi - lo + 1)).clamp(0, n_buckets - 1)
    order = scores.argsort(descending=True, stable=True)
    kept = forced.clone()
    # phase 1: the strongest sinks, wherever they are
    room = max(0, budget - int(kept.sum()))
    first = order[~kept[order]][: min(phase1, room)]
    kept[first] = True
    # phase 2: the others in descending score, while their bucket has room
    fill = torch.zeros(n_buckets, dtype=torch.long).index_add_(0, bucket[kept], torch.ones(int(kept.sum()), dtype=torch.long))
    cand = order[~kept[order]]  # descending score
    b = bucket[cand]
    by_bucket = torch.argsort(b, stable=True)  # stable: score order kept within a bucket
    start = torch.searchsorted(b[by_bucket], b[by_bucket], right=False)
    rank = torch.empty_like(b)
    rank[by_bucket] = torch.arange(b.numel()) - start
    ok = cand[rank < (capacity - fill[b]).clamp_min(0)]
    kept[ok[: max(0, budget - int(kept.sum()))]] = True
    # buckets full before the budget: the next best tokens
    rest = order[~kept[order]]
    kept[rest[: max(0, budget - int(kept.sum()))]] = True
    idx = kept.nonzero().squeeze(1)
    if idx.numel() > budget:  # forced tokens alone exceed the budget: the latest ones stay
        idx = idx[-budget:]
    return idx


class VisionSinkBucketing(Retention):
    name = "livevlm"
    Options = VSBOptions
    unit_queries = True  # the observation window is the newest unit's own queries

    def score(self, layer: int, mem: LayerMemory, memory: TokenMemory, ctx: RetainContext) -> torch.Tensor:
        assert ctx.unit_queries is not None and ctx.unit_positions is not None and ctx.rotate is not None
        q, pos = ctx.unit_queries[layer], ctx.unit_positions
        vis = ctx.unit_visual if ctx.unit_visual is not None else torch.ones(q.shape[1], dtype=torch.bool)
        rows = vis.nonzero().squeeze(1)[-self.options.observation:]
        if rows.numel() == 0:
            rows = torch.arange(q.shape[1])[-self.options.observation:]
        return attention(q[:, rows], pos[:, rows], mem, ctx.rotate)

    def retain(self, memory: TokenMemory, ctx: RetainContext) -> None:
        if not memory.layers or not self.needs(memory, ctx) or ctx.unit_queries is None:
            return
        o, m = self.options, ctx.budget
        assert m is not None
        idx = []
        for i, mem in enumerate(memory.layers):
            if mem.n <= m:
                idx.append(torch.arange(mem.n).unsqueeze(0).expand(mem.heads, -1))
                continue
            s = self.score(i, mem, memory, ctx)
            forced = self.protected(mem, memory, ctx)
            recent = torch.zeros(mem.n, dtype=torch.bool)
            recent[max(0, mem.n - o.short_term):] = True
            rows = [vsb_select(s[h], mem.positions[h, 0], m, o.bucket_capacity, int(o.phase1_fraction * m),
                               forced[h] | recent) for h in range(mem.heads)]
            idx.append(torch.stack(rows) if len({r.numel() for r in rows}) == 1 else
                       torch.stack([r[-min(x.numel() for x in rows):] for r in rows]))
        memory.keep(idx)

