"""Retrieval policies pick, per layer, which stored blocks the answer cache is built from.

Like kvpress presses: a subclass states its idea in `score()`; the base class turns scores into
a per-layer selection in time order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from streamvqa.store.block import Block


class RetrievalOptions(BaseModel):
    """Base of every retrieval policy's options: the defaults live here (one place), unknown
    options are refused. A policy's constructor takes the same names (`from_options`)."""

    model_config = ConfigDict(extra="forbid")


class TopKOptions(RetrievalOptions):
    topk: int | None = Field(64, ge=1, description="blocks retrieved per layer; None: all")
    score_mass: float | None = Field(None, gt=0, le=1, description="adaptive k: blocks covering this score mass")
    min_blocks: int = Field(1, ge=1, description="floor of the adaptive k (topk is its ceiling)")


# cosine: evidence recall 0.767 vs 0.433 for dot on the needle eval (docs/architecture.md)
Similarity = Literal["dot", "cosine"]
SIMILARITY: Similarity = "cosine"


class RetrieverUnavailable(ValueError):
    """A policy that cannot run as configured (e.g. no external encoder); `code` is stable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Caption:
    """A text memory entry (rLiVS): what the stream showed between t_start and t_end."""

    t_start: float
    t_end: float
    text: str


def _hms(t: float) -> str:
    s = int(t)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def caption_text(captions: list[Caption]) -> str:
    """The text an answer cache prefills after its blocks: one dated line per caption, in the
    order given."""
    return "".join(f"[{_hms(c.t_start)}-{_hms(c.t_end)}] {c.text.strip()}\n" for c in captions)


@dataclass
class RetrievalContext:
    """What a policy may look at: the question's mean pre-RoPE query per layer, the stream's
    representative keys, and which blocks are still in the encoder's local window. The optional
    fields default to "absent" so a policy works with whatever the session and the retention
    policy provide."""

    query: torch.Tensor  # [layers, heads * head_dim]
    rep_keys: torch.Tensor  # [blocks, layers, kv_heads, head_dim]
    block_ids: list[int]  # time order
    window_ids: list[int]  # blocks in the local window (most recent)
    question: str = ""  # the question text (external encoders, caption retrieval)
    times: list[tuple[float, float]] = field(default_factory=list)  # per block, like block_ids
    captions: list[Caption] = field(default_factory=list)  # text memory (rLiVS retention), time order
    # texts -> (embeddings [n, dim], token counts), from the LM's input table (caption index)
    embed_text: Callable[[list[str]], tuple[torch.Tensor, list[int]]] | None = None
    # LM input embeddings per block [n, hidden] and of the question [m, hidden] (`needs_inputs`)
    inputs: list[torch.Tensor] | None = None
    question_inputs: torch.Tensor | None = None


@dataclass
class Selection:
    """Per layer, the chosen block ids in time order; each chosen block's relevance (the fraction
    of layers that chose it and its mean z-scored score, for evidence)."""

    per_layer: list[list[int]]
    layer_share: dict[int, float] = field(default_factory=dict)
    score: dict[int, float] = field(default_factory=dict)
    captions: list[Caption] = field(default_factory=list)  # text to prefill after the blocks, time order
    # units whose original block (from the store) replaces the retained memory's copy (demotion)
    originals: list[int] = field(default_factory=list)
    # False: the question names nothing the candidates show (input matching's `min_match`);
    # a retained memory kept with keep_memory="unmatched" answers instead (the present)
    named: bool = True

    @property
    def size(self) -> int:
        return len(self.per_layer[0]) if self.per_layer else 0


class Retriever:
    """Base: per-layer top-k of `score()`; k = all blocks when `topk` is None.

    With `score_mass` set, k adapts per question (ours, beyond the papers): in each layer, the
    fewest blocks whose softmax over z-scored scores covers `score_mass`; the layers' mean,
    clamped to [min_blocks, topk], is used by every layer (one attention mask serves all layers,
    so their caches must hold the same number of blocks).
    """

    per_layer = True
    needs_inputs = False  # scores the blocks' LM input embeddings: the session keeps them (inputs.py)
    Options: type[RetrievalOptions] = RetrievalOptions

    @classmethod
    def from_options(cls, options: RetrievalOptions) -> Retriever:
        """The policy configured by its validated options (constructor arguments of the same names)."""
        return cls(**options.model_dump())

    def __init__(self, topk: int | None = None, score_mass: float | None = None, min_blocks: int = 1) -> None:
        if score_mass is not None and not 0 < score_mass <= 1:
            raise ValueError("score_mass must be in (0, 1]")
        self.topk = topk
        self.score_mass = score_mass
        self.min_blocks = min_blocks

    def score(self, ctx: RetrievalContext) -> torch.Tensor:
        """[layers, blocks] relevance; higher is better."""
        raise NotImplementedError

    def observe(self, block: Block, frames: list[np.ndarray] | None = None) -> None:
        """Called once per block written (stage 6): policies that keep their own index
        (pages, external embeddings, summary flags) update it here. Default: nothing."""

    def needs_query(self, n_blocks: int) -> bool:
        """Whether `select` will look at the question's query (it costs a forward pass)."""
        return self.topk is not None and (self.topk < n_blocks or self.score_mass is not None)

    @staticmethod
    def zscore(scores: torch.Tensor) -> torch.Tensor:
        return (scores - scores.mean(1, keepdim=True)) / scores.std(1, keepdim=True).clamp_min(1e-6)

    @staticmethod
    def evidence(block_ids: list[int], rows: list[list[int]], z: torch.Tensor) -> Selection:
        """A Selection from per-layer column indices (any lengths): ids in time order, each
        chosen block's share of layers and its mean z-score."""
        n_layers = len(rows)
        per_layer = [[block_ids[i] for i in sorted(row)] for row in rows]
        chosen = sorted({i for row in rows for i in row})
        share = {block_ids[i]: sum(i in row for row in rows) / n_layers for i in chosen}
        score = {block_ids[i]: float(z[:, i].mean()) for i in chosen}
        return Selection(per_layer, share, score)

    def size(self, z: torch.Tensor) -> int:
        """How many blocks each layer takes, given z-scored scores [layers, blocks]."""
        assert self.topk is not None
        if self.score_mass is None:
            return self.topk
        mass = z.softmax(dim=1).sort(dim=1, descending=True).values.cumsum(dim=1)
        per_layer = (mass < self.score_mass).sum(dim=1) + 1
        return int(per_layer.float().mean().round().clamp(self.min_blocks, self.topk))

    def select(self, ctx: RetrievalContext) -> Selection:
        n_layers, n_blocks = ctx.query.shape[0], len(ctx.block_ids)
        if self.topk is None or (self.topk >= n_blocks and self.score_mass is None):
            every = list(ctx.block_ids)
            return Selection([every] * n_layers, dict.fromkeys(every, 1.0))
        scores = self.score(ctx).float()
        if not self.per_layer:
            scores = scores.mean(0, keepdim=True).expand(n_layers, -1)
        z = (scores - scores.mean(1, keepdim=True)) / scores.std(1, keepdim=True).clamp_min(1e-6)
        k = min(self.size(z), n_blocks)
        top = scores.topk(k, dim=1).indices.sort(dim=1).values
        per_layer = [[ctx.block_ids[i] for i in row.tolist()] for row in top]
        chosen = sorted({i for row in top.tolist() for i in row})
        share = {ctx.block_ids[i]: float((top == i).any(dim=1).float().mean()) for i in chosen}
        score = {ctx.block_ids[i]: float(z[:, i].mean()) for i in chosen}
        return Selection(per_layer, share, score)


class AllBlocks(Retriever):
    """Every block, every layer: the exact (full-context) mode."""

    def __init__(self) -> None:
        super().__init__(None)


class WindowOnly(Retriever):
    """No retrieval: answer from the local window (sliding-window baseline, compact caches)."""

    def __init__(self) -> None:
        super().__init__(None)

    def select(self, ctx: RetrievalContext) -> Selection:
        window = list(ctx.window_ids)
        return Selection([window] * ctx.query.shape[0], dict.fromkeys(window, 1.0))
