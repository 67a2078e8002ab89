"""ReSV, the algorithm of V-Rex (Kim et al., arXiv 2512.12284): similarity clustering of tokens
across frames, with per-layer and per-head adaptive selection.

Only the abstract is available (methods.md section 9), so this is our reading of it:
- per layer and KV head, every visual token of a new unit is compared (cosine of pre-RoPE keys)
  with its *temporal* neighbour, the latest retained token of the same patch, and its *spatial*
  neighbour, the previous patch of the same frame;
- a token whose best similarity exceeds `threshold` joins that neighbour's cluster: the cluster's
  key and value become the weight-averaged mean, its weight counts the tokens it stands for, its
  position stays that of its first token;
- adaptive selection: each head would keep a different number of tokens (its own redundancy);
  heads of a layer must hold equal counts, so the layer keeps the mean count over its heads and
  each head merges exactly its most redundant tokens down to that count. Layers keep different
  counts (a layer-adaptive, ragged memory);
- beyond the budget, the base class evicts oldest first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from streamvqa.policies.memory import LayerMemory, Options, RetainContext, Retention, TokenMemory


class ReSVOptions(Options):
    threshold: float = Field(0.9, ge=-1, le=1.01, description="cosine above which a token joins a cluster (> 1: never)")
    temporal: bool = True
    spatial: bool = True


def merge_targets(keys: torch.Tensor, patch: torch.Tensor, new: torch.Tensor, temporal: bool, spatial: bool,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """For one head: keys [n, d], patch [n] (-1 text), new [n] bool (the new unit's tokens).
    Returns, per token, the index of its best neighbour (-1 none) and that cosine (-inf none)."""
    n = keys.shape[0]
    target = torch.full((n,), -1)
    best = torch.full((n,), float("-inf"))
    unit = F.normalize(keys.float(), dim=-1)
    vis = patch >= 0
    old = vis & ~new
    cand = (vis & new).nonzero().squeeze(1)
    if temporal and bool(old.any()) and cand.numel():
        n_patch = int(patch.max()) + 1
        old_idx = old.nonzero().squeeze(1)
        last = torch.full((n_patch,), -1).scatter_reduce(0, patch[old_idx], old_idx, "amax")
        t = last[patch[cand]]
        ok = t >= 0
        sim = torch.where(ok, (unit[cand] * unit[t.clamp_min(0)]).sum(-1), torch.full((cand.numel(),), float("-inf")))
        best[cand], target[cand] = sim, torch.where(ok, t, torch.full_like(t, -1))
    if spatial and cand.numel() > 1:
        prev = cand[:-1]
        nxt = cand[1:]
        adjacent = patch[nxt] == patch[prev] + 1
        sim = torch.where(adjacent, (unit[nxt] * unit[prev]).sum(-1), torch.full((nxt.numel(),), float("-inf")))
        better = sim > best[nxt]
        best[nxt] = torch.where(better, sim, best[nxt])
        target[nxt] = torch.where(better, prev, target[nxt])
    return target, best


class ReSV(Retention):
    name = "resv"
    Options = ReSVOptions

    def needs(self, memory: TokenMemory, ctx: RetainContext) -> bool:
        return bool(ctx.new_units)

    def retain(self, memory: TokenMemory, ctx: RetainContext) -> None:
        o = self.options
        layers = []
        for mem in memory.layers:
            new = torch.isin(mem.unit, torch.tensor(ctx.new_units))
            plans = [merge_targets(mem.keys[h], mem.patch[h], new[h], o.temporal, o.spatial) for h in range(mem.heads)]
            wanted = [int(((b > o.threshold) & (t >= 0)).sum()) for t, b in plans]
            merges = round(sum(wanted) / len(wanted))  # the layer's count: the mean over its heads
            merges = min([merges] + [int((t >= 0).sum()) for t, _ in plans])
            layers.append(self._merge(mem, plans, merges) if merges else mem)
        if any(a is not b for a, b in zip(layers, memory.layers, strict=True)):
            memory.set_layers(layers)

    @staticmethod
    def _merge(mem: LayerMemory, plans: list, merges: int) -> LayerMemory:
        keys, values, weight = mem.keys.clone().float(), mem.values.clone().float(), mem.weight.clone()
        keep = torch.ones(mem.heads, mem.n, dtype=torch.bool)
        for h, (target, best) in enumerate(plans):
            root: dict[int, int] = {}
            ok = target >= 0
            order = torch.where(ok, best, torch.full_like(best, float("-inf"))).argsort(descending=True)
            chosen = set(order[:merges].tolist())
            for j in sorted(chosen):  # ascending: a spatial target merged before resolves to its root
                t = int(target[j])
                while not keep[h, t]:
                    t = int(root[t])
                w = weight[h, t] + weight[h, j]
                keys[h, t] = (keys[h, t] * weight[h, t] + keys[h, j] * weight[h, j]) / w
                values[h, t] = (values[h, t] * weight[h, t] + values[h, j] * weight[h, j]) / w
                weight[h, t] = w
                keep[h, j] = False
                root[j] = t
        out = LayerMemory(keys.to(mem.keys.dtype), values.to(mem.values.dtype), mem.positions, mem.unit, mem.frame,
                          mem.patch, mem.visual, weight)
        return out.gather(torch.stack([k.nonzero().squeeze(1) for k in keep]))
