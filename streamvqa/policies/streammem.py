"""StreamMem (Yang et al., arXiv 2508.15717): query-agnostic KV compression under a fixed budget,
with the chat template as a proxy query and per-frame prototypes.

- Stage 1: clips of 8 frames; consecutive frames whose mean visual embeddings have cosine above
  delta = 0.95 are merged (averaged) before encoding (`frame_filter` in the preset).
- Stage 3: each clip is prefilled on top of the compressed memory (`encode_on = "memory"`).
- Stage 5: the chat-template tokens `<|im_end|>\\n<|im_start|>assistant\\n` are run after the clip
  as a proxy query; per layer, A = softmax(Q_proxy K^T / sqrt(d)) averaged over the proxy rows
  (and the GQA group) scores every retained token, old and new jointly. Each head keeps its
  top-k (budget M per layer, "split evenly across layers"), and each new frame adds one
  prototype per head: K = sum_j a_j K_j, V = sum_j a_j V_j over the frame's tokens, a the
  normalised scores. The proxy tokens' KV is dropped. Budget M = 6K tokens (also 12K, 24K).
- Positions stay original; the paper's YaRN context extension is not applied here.
Compaction only happens when the memory is over budget: below it, the memory is exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from streamvqa.policies.memory import (
    LayerMemory,
    Options,
    RetainContext,
    Retention,
    TokenMemory,
    attention,
    top_k,
)
from streamvqa.policies.units import FrameFilter, FrameItem

PROXY = "<|im_end|>\n<|im_start|>assistant\n"


class StreamMemOptions(Options):
    proxy: str = Field(PROXY, min_length=1, description="proxy query text (the chat template)")
    prototypes: bool = Field(True, description="add one attention-weighted prototype per new frame")


class RedundantFrames(FrameFilter):
    """Stage 1: a frame whose mean visual token has cosine above `delta` (0.95) with the previous
    kept frame's is averaged into it instead of being encoded."""

    def __init__(self, delta: float = 0.95) -> None:
        self.delta = delta

    def redundant(self, previous: FrameItem, item: FrameItem) -> bool:
        return float(F.cosine_similarity(previous.mean, item.mean, dim=0)) > self.delta


def prototypes(mem: LayerMemory, scores: torch.Tensor, frames: list[int]) -> LayerMemory | None:
    """One prototype per frame and head: the score-weighted mean of the frame's keys and values
    (scores [H, n], normalised within the frame). It sits at the frame's best token's position."""
    rows = []
    for f in frames:
        sel = (mem.frame == f) & mem.visual  # [H, n]
        if not bool(sel.any()):
            continue
        w = torch.where(sel, scores.float(), torch.zeros_like(scores, dtype=torch.float32))
        w = w / w.sum(1, keepdim=True).clamp_min(1e-12)
        best = w.argmax(dim=1)  # [H]
        pick = lambda t, b=best: t.gather(1, b.view(-1, 1))  # noqa: E731
        rows.append(LayerMemory(
            keys=(w.unsqueeze(-1) * mem.keys.float()).sum(1, keepdim=True).to(mem.keys.dtype),
            values=(w.unsqueeze(-1) * mem.values.float()).sum(1, keepdim=True).to(mem.values.dtype),
            positions=mem.positions.gather(2, best.view(-1, 1, 1).expand(-1, mem.positions.shape[1], 1)),
            unit=pick(mem.unit), frame=pick(mem.frame), patch=torch.full_like(pick(mem.patch), -1),
            visual=torch.ones_like(pick(mem.visual)), weight=sel.sum(1, keepdim=True).float(),
        ))
    if not rows:
        return None
    out = rows[0]
    for r in rows[1:]:
        out = out.cat(r)
    return out


class StreamMem(Retention):
    name = "streammem"
    Options = StreamMemOptions

    def score(self, layer: int, mem: LayerMemory, memory: TokenMemory, ctx: RetainContext) -> torch.Tensor:
        q, pos = self._proxy
        return attention(q[layer], pos, mem, ctx.rotate)

    def scratch(self) -> tuple[str, int]:
        return self.options.proxy, 0

    def retain(self, memory: TokenMemory, ctx: RetainContext) -> None:
        if not memory.layers or not self.needs(memory, ctx):
            return
        assert ctx.probe is not None and ctx.rotate is not None and ctx.budget is not None
        self._proxy = ctx.probe(self.options.proxy)
        new_frames = sorted({int(f) for m in memory.layers[:1] for f in
                             m.frame[0][torch.isin(m.unit[0], torch.tensor(ctx.new_units or [-1]))].unique()})
        idx, protos = [], []
        for i, mem in enumerate(memory.layers):
            s = self.score(i, mem, memory, ctx)
            proto = prototypes(mem, s, new_frames) if self.options.prototypes else None
            k = max(0, ctx.budget - (proto.n if proto is not None else 0))
            idx.append(top_k(s, min(k, mem.n)).sort(dim=1).values)
            protos.append(proto)
        memory.keep(idx)
        if any(p is not None for p in protos):
            joined = [m if p is None else m.cat(p) for m, p in zip(memory.layers, protos, strict=True)]
            memory.set_layers([m.gather(m.unit.argsort(dim=1, stable=True)) for m in joined])
