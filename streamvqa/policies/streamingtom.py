"""StreamingTOM (Chen et al., CVPR 2026, arXiv 2510.18269): Causal Temporal Reduction before the
LLM and Online Quantized Memory.

CTR (stage 2, `streamingtom/modules/ctr.py`), per frame, defaults G = 50, tau_c = 0.9, k = 7,
beta = 0.6:
- token i is *static* if cos(F_t^i, F_{t-1}^i) > tau_c (same patch, previous frame), else
  *dynamic*; k_s = floor(G |S| / n), k_d = G - k_s, clipped to what is available;
- dynamic tokens: the top-k_d by saliency. The code's saliency is the attention each token
  receives in the last SigLIP layer; our adapters expose no vision attention, so we read
  saliency as the attention the frame's mean token pays each token in embedding space,
  softmax(x_i . mean(x) / sqrt(d)) [reading];
- static tokens: DPC-kNN: distances cdist / sqrt(d), density exp(-mean squared distance to the
  k nearest), delta = distance to the nearest denser token, the top-k_s by density * delta are
  centres, every other token joins its nearest centre; merged = beta * centre + (1-beta) * mean;
- exactly G tokens per frame (all of them if a frame has fewer), in the original order; a merged
  token takes its centre's position.
OQM (stage 5, `streamingtom/modules/oqm.py`): each frame's group of tokens is stored 4-bit, per
head and channel min/max (scale = (max-min)/15, offset = min), two codes per byte; the group's
representative key is its mean pre-RoPE key (the retrieval index). Nothing is evicted beyond
the stream's budgets; group top-k retrieval is the retrieval policy `streamingtom`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from streamvqa.policies.memory import (
    LayerMemory,
    Options,
    Packed,
    RetainContext,
    Retention,
    TokenMemory,
    TokenMeta,
)
from streamvqa.policies.units import Reducer


class CTROptions(Options):
    tokens: int = Field(50, ge=1, description="G: tokens kept per frame")
    threshold: float = Field(0.9, ge=-1, le=1, description="tau_c: static if cosine to the previous frame's patch is above")
    knn: int = Field(7, ge=1, description="k of DPC-kNN")
    beta: float = Field(0.6, ge=0, le=1, description="weight of the centre in a merged token")


def saliency(x: torch.Tensor) -> torch.Tensor:
    """[n, d] -> [n]: attention of the frame's mean token to each token (our reading)."""
    x = x.float()
    return (x @ x.mean(0) / math.sqrt(x.shape[1])).softmax(0)


def dpc_knn(x: torch.Tensor, k_centres: int, knn: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Density-peak clustering: (centre indices [k], assignment of every token to a centre
    index into `x` [m])."""
    m, d = x.shape
    dist = torch.cdist(x.double(), x.double()) / math.sqrt(d)
    k = min(knn, m - 1)
    if k > 0:
        near = dist.topk(k + 1, dim=1, largest=False).values[:, 1:]  # without itself
        density = torch.exp(-(near ** 2).mean(1))
    else:
        density = torch.ones(m, dtype=torch.float64)
    density = density + torch.arange(m, dtype=torch.float64) * 1e-12  # ties: the later token is denser
    denser = density.unsqueeze(0) > density.unsqueeze(1)  # [i, j]: j denser than i
    delta = torch.where(denser, dist, torch.full_like(dist, float("inf"))).min(1).values
    delta = torch.where(torch.isinf(delta), dist.max(1).values, delta)
    centres = (density * delta).topk(k_centres).indices.sort().values
    assign = centres[dist[:, centres].argmin(1)]
    assign[centres] = centres
    return centres, assign


def reduce_frame(x: torch.Tensor, prev: torch.Tensor | None, o: CTROptions) -> tuple[torch.Tensor, torch.Tensor]:
    """CTR for one frame: tokens [n, d] (prev: the previous frame's [n, d] or None) ->
    (kept tokens [G, d], their indices in the frame [G], ascending)."""
    n, G = x.shape[0], o.tokens
    if n <= G:
        return x, torch.arange(n)
    static = torch.zeros(n, dtype=torch.bool)
    if prev is not None and prev.shape == x.shape:
        static = F.cosine_similarity(x.float(), prev.float(), dim=1) > o.threshold
    s_idx, d_idx = static.nonzero().squeeze(1), (~static).nonzero().squeeze(1)
    k_s = math.floor(G * s_idx.numel() / n)
    k_d = min(G - k_s, d_idx.numel())
    k_s = min(G - k_d, s_idx.numel())
    out_idx, out_x = [], []
    if k_d:
        top = d_idx[saliency(x)[d_idx].topk(k_d).indices]
        out_idx.append(top)
        out_x.append(x[top].float())
    if k_s:
        xs = x[s_idx].float()
        centres, assign = dpc_knn(xs, k_s, o.knn)
        for c in centres.tolist():
            members = xs[assign == c]
            out_idx.append(s_idx[c].view(1))
            out_x.append((o.beta * xs[c] + (1 - o.beta) * members.mean(0)).view(1, -1))
    idx = torch.cat(out_idx)
    xs_out = torch.cat(out_x)
    order = idx.argsort()
    return xs_out[order].to(x.dtype), idx[order]


class CausalTemporalReduction(Reducer):
    """Stage 2 hook: reduces each frame of a unit to G visual tokens (text tokens untouched)."""

    Options = CTROptions

    def __init__(self, options: CTROptions | None = None) -> None:
        self.options = options or CTROptions()
        self.prev: torch.Tensor | None = None  # the previous frame's visual tokens (causal state)

    def reduce_unit(self, embeds: torch.Tensor, meta: TokenMeta) -> tuple[torch.Tensor, torch.Tensor]:
        """embeds [N, hidden] of a unit piece -> (reduced [N', hidden], kept indices [N'])."""
        out = embeds.clone()
        keep = torch.ones(embeds.shape[0], dtype=torch.bool)
        for f in meta.frame[meta.visual].unique().tolist():
            idx = (meta.visual & (meta.frame == f)).nonzero().squeeze(1)
            x = embeds[idx]
            reduced, kept = reduce_frame(x, self.prev, self.options)
            self.prev = x
            keep[idx] = False
            keep[idx[kept]] = True
            out[idx[kept]] = reduced.to(out.dtype)
        index = keep.nonzero().squeeze(1)
        return out[index], index


# -- OQM -------------------------------------------------------------------------------------
class OQMOptions(Options):
    bits: int = Field(4, ge=2, le=8, description="bits per code (packed when 4 or fewer)")


def quantize(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x [H, n, d] -> (codes uint8 [H, n, d], scale [H, 1, d], offset [H, 1, d]): per head and
    channel min/max over the group's tokens, scale = (max - min) / (2^bits - 1)."""
    x = x.float()
    lo, hi = x.amin(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)
    scale = (hi - lo) / (2 ** bits - 1)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = torch.round((x - lo) / safe).clamp(0, 2 ** bits - 1).to(torch.uint8)
    return codes, scale.half(), lo.half()


def dequantize(codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    return codes.float() * scale.float() + offset.float()


def pack4(codes: torch.Tensor) -> torch.Tensor:
    flat = codes.flatten()
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    return flat[0::2] | (flat[1::2] << 4)


def unpack4(packed: torch.Tensor, numel: int) -> torch.Tensor:
    return torch.stack([packed & 0xF, packed >> 4], dim=1).flatten()[:numel]


class QuantizedUnit(Packed):
    """One frame group in every layer, 4-bit; token bookkeeping kept beside it."""

    def __init__(self, unit: int, layers: list[LayerMemory], bits: int) -> None:
        self.unit = unit
        self.bits = bits
        self.meta = [(m.positions, m.unit, m.frame, m.patch, m.visual, m.weight) for m in layers]
        self.shape = [tuple(m.keys.shape) for m in layers]
        self.dtype = layers[0].keys.dtype
        # the group's representative key: its mean pre-RoPE key, taken before quantization [L, H, d]
        self.rep = torch.stack([m.keys.float().mean(dim=1) for m in layers])
        self.data = []
        for m in layers:
            kc, ks, ko = quantize(m.keys, bits)
            vc, vs, vo = quantize(m.values, bits)
            if bits <= 4:
                kc, vc = pack4(kc), pack4(vc)
            self.data.append((kc, ks, ko, vc, vs, vo))

    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for row in self.data for t in row)

    def expand(self) -> list[LayerMemory]:
        out = []
        for shape, (kc, ks, ko, vc, vs, vo), meta in zip(self.shape, self.data, self.meta, strict=True):
            numel = math.prod(shape)
            if self.bits <= 4:
                kc, vc = unpack4(kc, numel).view(shape), unpack4(vc, numel).view(shape)
            out.append(LayerMemory(dequantize(kc, ks, ko).to(self.dtype), dequantize(vc, vs, vo).to(self.dtype), *meta))
        return out


class OnlineQuantizedMemory(Retention):
    name = "streamingtom"
    Options = OQMOptions

    def needs(self, memory: TokenMemory, ctx: RetainContext) -> bool:
        return bool(ctx.new_units)

    def retain(self, memory: TokenMemory, ctx: RetainContext) -> None:
        """Move every new unit's tokens from the float memory into its 4-bit group."""
        for u in ctx.new_units:
            if u not in memory.units or u in memory.packed:
                continue
            parts, rest = [], []
            for m in memory.layers:
                sel = m.unit[0] == u  # no per-head selection here: heads hold the same tokens
                parts.append(m.gather(sel.nonzero().squeeze(1).unsqueeze(0).expand(m.heads, -1)))
                rest.append(m.gather((~sel).nonzero().squeeze(1).unsqueeze(0).expand(m.heads, -1)))
            memory.pack(QuantizedUnit(u, parts, self.options.bits), rest)
