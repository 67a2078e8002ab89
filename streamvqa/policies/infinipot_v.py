"""InfiniPot-V (Kim et al., NeurIPS 2025, arXiv 2506.15745): a hard memory cap |M|; when the
memory reaches it, compress to |C| with Temporal-axis Redundancy (TaR) and Value Norm (VaN).

Defaults from the authors' code (`process_kv_cache`): |C| / |M| = 24 / 32 frames
(`keep_fraction` 0.75), `tar_ratio` alpha = 0.5, `query_ratio` = 0.25 (recent frames kept whole),
adaptive pooling off. |M| is the stream's memory budget in tokens (preset: 5462, so |C| = 4096,
the paper's streaming budget).

- TaR: R = floor(frames x query_ratio) most recent frames are kept. Every older visual token
  (f, p) scores -(1/R) sum_r cos(K[f, p], K[r, p]) per KV head: the same spatial patch p in the
  recent frames. We compare *pre-RoPE* keys (the code uses post-RoPE ones): the store keeps
  position-free keys, and without the rotation the cosine measures content redundancy rather
  than the temporal distance the rotation adds. The top (alpha*B - recent) by TaR are kept.
- VaN: ||V||_2 per head fills the remaining budget (TaR-kept tokens are forced).
- Selection is per head (heads keep different tokens, equal counts); positions stay original.
- `adaptive_pooling`: VaN scores average-pooled along the token order with a kernel per layer
  quarter (7, 5, 3, none; the code pools 3-D/2-D/1-D, the paper sizes kernels by each layer's
  coefficient of variation: ours is the 1-D reading).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from streamvqa.policies.memory import LayerMemory, Options, RetainContext, Retention, TokenMemory, top_k


class InfiniPotOptions(Options):
    cap_tokens: int | None = Field(None, ge=1, description="|M| in tokens; None: the stream's memory budget")
    keep_fraction: float = Field(0.75, gt=0, le=1, description="|C| / |M| (24 / 32 frames)")
    tar_ratio: float = Field(0.5, ge=0, le=1, description="alpha: share of |C| chosen by TaR")
    recent_ratio: float = Field(0.25, ge=0, le=1, description="query_ratio: recent frames kept whole")
    adaptive_pooling: bool = False


def tar_scores(keys: torch.Tensor, frame: torch.Tensor, patch: torch.Tensor, recent: torch.Tensor) -> torch.Tensor:
    """TaR for one head: keys [n, d], frame/patch [n], recent [n] bool. -mean cosine to the same
    patch in the recent frames; -inf where undefined (text, or no recent token at that patch)."""
    n = keys.shape[0]
    out = torch.full((n,), float("-inf"))
    vis = patch >= 0
    ref = vis & recent
    if not bool(ref.any()):
        return out
    unit = F.normalize(keys.float(), dim=-1)
    n_patch = int(patch.max()) + 1
    sums = torch.zeros(n_patch, keys.shape[1]).index_add_(0, patch[ref], unit[ref])
    counts = torch.zeros(n_patch).index_add_(0, patch[ref], torch.ones(int(ref.sum())))
    cand = vis & ~recent
    p = patch[cand]
    has = counts[p] > 0
    score = -(unit[cand] * sums[p]).sum(-1) / counts[p].clamp_min(1)
    out[cand] = torch.where(has, score, torch.full_like(score, float("-inf")))
    return out


def van_scores(values: torch.Tensor, kernel: int = 1) -> torch.Tensor:
    """VaN for one head: ||V||_2 per token [n], optionally average-pooled (odd kernel)."""
    s = values.float().norm(dim=-1)
    if kernel > 1 and s.numel() > 1:
        s = F.avg_pool1d(s.view(1, 1, -1), kernel, stride=1, padding=kernel // 2, count_include_pad=False).view(-1)
    return s


class InfiniPotV(Retention):
    name = "infinipot-v"
    Options = InfiniPotOptions

    def cap(self, ctx: RetainContext) -> int | None:
        return self.options.cap_tokens or ctx.budget

    def needs(self, memory: TokenMemory, ctx: RetainContext) -> bool:
        cap = self.cap(ctx)
        return cap is not None and any(n > cap for n in memory.tokens)

    def budgets(self, memory: TokenMemory, ctx: RetainContext) -> list[int]:
        cap = self.cap(ctx)
        assert cap is not None
        return [max(1, math.floor(self.options.keep_fraction * cap))] * len(memory.layers)

    def score(self, layer: int, mem: LayerMemory, memory: TokenMemory, ctx: RetainContext) -> torch.Tensor:
        o = self.options
        budget = self.budgets(memory, ctx)[layer]
        n_layers = len(memory.layers)
        kernel = (7, 5, 3, 1)[min(3, 4 * layer // max(1, n_layers))] if o.adaptive_pooling else 1
        out = []
        for h in range(mem.heads):
            frames = mem.frame[h][mem.visual[h]].unique()
            r = math.floor(len(frames) * o.recent_ratio)
            recent_frames = frames[len(frames) - r:] if r else frames[:0]
            recent = torch.isin(mem.frame[h], recent_frames) & (mem.frame[h] >= 0)
            van = van_scores(mem.values[h], kernel)
            forced = recent.clone()
            n_tar = max(0, math.floor(o.tar_ratio * budget) - int(recent.sum()))
            if n_tar:
                tar = tar_scores(mem.keys[h], mem.frame[h], mem.patch[h], recent)
                ok = torch.isfinite(tar)
                if bool(ok.any()):
                    picked = top_k(tar.masked_fill(~ok, float("-inf")).unsqueeze(0), min(n_tar, int(ok.sum())))[0]
                    forced[picked] = True
            # forced tokens outrank every other token, and keep their VaN order among themselves
            out.append(torch.where(forced, van + van.max() + 1, van))
        return torch.stack(out)
