"""StreamKV (Chen et al., AAAI 2026, arXiv 2511.07278): semantic segments with a summary unit,
guidance-prompt scoring and layer-adaptive budgets.

Stage 1 (`Abstract_StreamKV.encode_video`, segment_mode="semantic"): s_t = cosine between the
mean visual tokens of frame t and frame t-1; a frame joins the current segment while the segment
is shorter than `min_segment` (4) or s_t > `segment_theta` (0.99); otherwise the segment closes.
At `max_segment` (64) the new frame still joins and the most similar adjacent pair is averaged
(the code's `merge`; the paper splits instead). With `summary`, the per-token mean of the
segment's frames is encoded as one more unit right after it, and is always kept.

Stage 5 (`calculate_score`, `obtain_cdf_num`, `rescale_sum_match`): per layer l and frame f of
the new segment, s_l(f) = g_l . k_l(f), the mean pre-RoPE query of a fixed guidance prompt (run
after the segment) against the frame's mean key, heads concatenated (raw dot product, as the
code). Budgets: z-score each layer's scores, softmax, sort, cumulative sum; binary-search one
mass p so that sum_l K_l(p) ~ L*T*kept_fraction (tolerance 5); clamp each K_l to
[max(1, floor(T*kept*(1-temp))), min(T, floor(T*kept*(1+temp)))] keeping the sum. Each layer
keeps its top-K_l frames whole; the summary always stays.

Code vs paper: the code's `compression_ratio` (0.6) is the fraction of frames *kept* (the paper's
"down 60%" reads as discarded). We expose `kept_fraction` = 0.6, named for what it does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from streamvqa.models.base import Piece
from streamvqa.policies.memory import Options, RetainContext, Retention, TokenMemory
from streamvqa.policies.units import FrameItem, Segmenter, average_pieces

GUIDANCE = (
    "Keep what matters in this video segment: the objects and people, their colours, positions "
    "and counts, the actions and how they change, any text on screen, and what causes what."
)


class StreamKVOptions(Options):
    kept_fraction: float = Field(0.6, gt=0, le=1, description="fraction of a segment's frames kept per layer (code's compression_ratio)")
    temp: float = Field(1.0, ge=0, le=1, description="compress_temp: per-layer budget range around the mean")
    guidance: str = Field(GUIDANCE, min_length=1)


def boundary(prev_mean: torch.Tensor, new_mean: torch.Tensor, size: int, theta: float, min_size: int) -> bool:
    """True when the new frame starts a new segment (closes the current one)."""
    if size < min_size:
        return False
    return float(F.cosine_similarity(prev_mean.float(), new_mean.float(), dim=0)) <= theta


def most_similar_pair(means: list[torch.Tensor]) -> int:
    """Index i of the adjacent pair (i, i+1) with the highest cosine (merged at the size cap)."""
    m = F.normalize(torch.stack(means).float(), dim=-1)
    return int((m[:-1] * m[1:]).sum(-1).argmax())


class SemanticSegments(Segmenter):
    """Stage 1: a segment closes where adjacent frames stop looking alike (`boundary`); at
    `max_segment` frames the most similar adjacent pair is averaged; with `summary`, the segment's
    per-token mean frame is one more unit after it. Defaults (code): 0.99, 4, 64, summary on."""

    def __init__(self, theta: float = 0.99, min_segment: int = 4, max_segment: int = 64, summary: bool = True) -> None:
        super().__init__()
        self.theta, self.min_segment, self.max_segment, self.with_summary = theta, min_segment, max_segment, summary

    @classmethod
    def from_config(cls, config) -> SemanticSegments:
        return cls(config.segment_theta, config.min_segment, config.max_segment, config.summary)

    def starts_new(self, items: list[FrameItem], item: FrameItem) -> bool:
        return boundary(items[-1].mean, item.mean, len(items), self.theta, self.min_segment)

    def full(self, items: list[FrameItem]) -> bool:
        return False

    def merge_at(self, items: list[FrameItem]) -> int | None:
        return most_similar_pair([x.mean for x in items]) if len(items) > self.max_segment else None

    def summary(self, items: list[FrameItem]) -> Piece | None:
        if not self.with_summary or len(items) < 2:
            return None
        out = items[0].piece
        for k, it in enumerate(items[1:], start=1):
            out = average_pieces(out, it.piece, k, 1)
        return out


def frame_scores(guide: torch.Tensor, frame_keys: torch.Tensor) -> torch.Tensor:
    """s(f) = g . k(f): guide [Hq*d] (mean guidance query, heads concatenated), frame_keys
    [T, H, d] mean pre-RoPE key per frame per KV head (GQA-expanded here). Returns [T]."""
    T, H, d = frame_keys.shape
    group = guide.shape[0] // (H * d)
    k = frame_keys.float().repeat_interleave(group, dim=1).reshape(T, -1)
    return k @ guide.float()


def layer_budgets(scores: torch.Tensor, kept: float, temp: float, tol: int = 5) -> torch.Tensor:
    """StreamKV's layer-adaptive allocation: scores [L, T] -> frames kept per layer [L]."""
    L, T = scores.shape
    target = L * T * kept
    s = scores.float()
    z = (s - s.mean(1, keepdim=True)) / s.std(1, keepdim=True, unbiased=True).nan_to_num(0).clamp_min(1e-6)
    cdf = z.softmax(dim=1).sort(dim=1, descending=True).values.cumsum(dim=1)

    def counts(p: float) -> torch.Tensor:
        return ((cdf < p).sum(dim=1) + 1).clamp(max=T)

    lo, hi, k = 0.0, 1.0, counts(1.0)
    for _ in range(60):
        mid = (lo + hi) / 2
        k = counts(mid)
        total = int(k.sum())
        if abs(total - target) <= tol:
            break
        lo, hi = (mid, hi) if total < target else (lo, mid)
    k_min = max(1, math.floor(T * kept * (1 - temp)))
    k_max = max(k_min, min(T, math.floor(T * kept * (1 + temp))))
    k = k.clamp(k_min, k_max)
    goal = min(max(round(target), L * k_min), L * k_max)
    # rescale_sum_match: move single frames between layers until the sum is the goal; the
    # layers with the most uncovered mass gain first, those with the least lose first
    while int(k.sum()) != goal:
        covered = cdf.gather(1, (k - 1).clamp(0, T - 1).unsqueeze(1)).squeeze(1)
        if int(k.sum()) < goal:
            room = k < k_max
            i = int(torch.where(room, 1 - covered, torch.full_like(covered, -1.0)).argmax())
            k[i] += 1
        else:
            room = k > k_min
            i = int(torch.where(room, 1 - covered, torch.full_like(covered, 2.0)).argmin())
            k[i] -= 1
    return k


class StreamKV(Retention):
    name = "streamkv"
    Options = StreamKVOptions

    def scratch(self) -> tuple[str, int]:
        return self.options.guidance, 0

    def needs(self, memory: TokenMemory, ctx: RetainContext) -> bool:
        return any(memory.units[u].kind == "frames" for u in ctx.new_units if u in memory.units)

    def retain(self, memory: TokenMemory, ctx: RetainContext) -> None:
        new = [u for u in ctx.new_units if u in memory.units and memory.units[u].kind == "frames"]
        if not new or not memory.layers or ctx.probe is None:
            return
        queries, _ = ctx.probe(self.options.guidance)
        layers = memory.layers
        idx = []
        per_layer_frames = []
        for mem in layers:
            sel = torch.isin(mem.unit[0], torch.tensor(new))
            per_layer_frames.append(mem.frame[0][sel].unique())
        frames = per_layer_frames[0]
        T = len(frames)
        if T <= 1:
            return
        scores = torch.zeros(len(layers), T)
        for i, (mem, q) in enumerate(zip(layers, queries, strict=True)):
            guide = q.float().mean(dim=1).reshape(-1)  # [Hq*d]
            fk = torch.stack([mem.keys[:, mem.frame[0] == f].float().mean(dim=1) for f in frames])
            scores[i] = frame_scores(guide, fk)
        budgets = layer_budgets(scores, self.options.kept_fraction, self.options.temp)
        for i, mem in enumerate(layers):
            top = scores[i].topk(int(budgets[i])).indices
            dropped = frames[[j for j in range(T) if j not in set(top.tolist())]]
            keep = ~(torch.isin(mem.frame[0], dropped) & torch.isin(mem.unit[0], torch.tensor(new)))
            idx.append(keep.nonzero().squeeze(1).unsqueeze(0).expand(mem.heads, -1))
        memory.keep(idx)
