"""The model adapter: everything the pipeline needs from a Video-LLM, and nothing more.

An adapter turns frames into visual token embeddings, lays out the chat template as *pieces*
(prefix, one piece per stream unit, question), assigns positions to each piece through a
per-stream position tracker (1-D RoPE or Qwen M-RoPE), runs the language model over embeddings
with explicit `position_ids` into a cache the engine owns, and re-rotates position-free keys.
Stock transformers models only; nothing is patched.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from streamvqa.models import batching
from streamvqa.models import template as chat


@dataclass
class Segment:
    """A run of tokens of one kind: text ids, or visual embeddings (with an M-RoPE grid).

    A DeepStack family (Qwen3-VL) widens `embeds` to [n, hidden * (1 + L)]: the input
    embedding, then the L per-layer features added into the first decoder layers' hidden
    states. One tensor per token, so policies that average, merge or select visual tokens
    carry the DeepStack features along with them."""

    ids: torch.Tensor | None = None  # [n] int64
    embeds: torch.Tensor | None = None  # [n, hidden] (or wider, see above)
    grid: tuple[int, int, int] | None = None  # (t, h, w) in LLM tokens, M-RoPE families only

    @property
    def n(self) -> int:
        return int(self.ids.numel()) if self.ids is not None else int(self.embeds.shape[0])


Piece = list[Segment]


def piece_len(piece: Piece) -> int:
    return sum(s.n for s in piece)


class PositionTracker(ABC):
    """Per-stream position counter. `next` is the position the next text token gets."""

    rows: int

    def __init__(self, start: int = 0) -> None:
        self.next = start

    @abstractmethod
    def place(self, piece: Piece) -> torch.Tensor:
        """Positions [rows, n] for the piece's tokens; advances `next`."""

    def fork(self, start: int) -> PositionTracker:
        """A tracker of the same kind continuing from `start` (answer caches, re-laid blocks)."""
        other = copy.copy(self)
        other.next = start
        return other


class LinearPositions(PositionTracker):
    rows = 1

    def place(self, piece: Piece) -> torch.Tensor:
        n = piece_len(piece)
        pos = torch.arange(self.next, self.next + n).view(1, n)
        self.next += n
        return pos


class MRopePositions(PositionTracker):
    """Qwen2-VL / Qwen2.5-VL / Qwen3-VL 3-D positions, matching `get_rope_index` of
    transformers 5.23 (Qwen3-VL: every block is one temporal patch, t = 1).

    Text runs advance all three rows together; a vision block starting at s gets temporal
    s + floor(k * interval), height s + row, width s + col, and the text after it resumes at
    s + max(h, w) (the 5.23 rule: the temporal extent is ignored).
    """

    rows = 3

    def __init__(self, start: int = 0, interval: float = 1.0) -> None:
        super().__init__(start)
        self.interval = interval

    def place(self, piece: Piece) -> torch.Tensor:
        out = []
        for seg in piece:
            if seg.grid is None:
                n = seg.n
                out.append(torch.arange(self.next, self.next + n).view(1, n).expand(3, n))
                self.next += n
                continue
            t, h, w = seg.grid
            s = self.next
            tt = (torch.arange(t, dtype=torch.float64) * self.interval).long() + s
            T, H, W = torch.meshgrid(tt, torch.arange(h) + s, torch.arange(w) + s, indexing="ij")
            out.append(torch.stack([T, H, W]).reshape(3, -1))
            self.next = s + max(h, w)
        return torch.cat(out, dim=1) if out else torch.empty(3, 0, dtype=torch.long)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class ModelAdapter(ABC):
    """One Video-LLM family. Subclasses set the modules and the template; the rest is shared."""

    family: str
    model: nn.Module
    tokenizer: object
    backbone: nn.Module  # the decoder stack (takes inputs_embeds, position_ids, past_key_values)
    lm_head: nn.Module
    rotary: nn.Module  # the decoder's rotary embedding module: rotary(x, position_ids) -> (cos, sin)
    eos_ids: set[int]
    name: str = ""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "unit_piece" in cls.__dict__:  # an encode under the scheduler joins its vision batch
            cls.unit_piece = batching.routed_vision(cls.__dict__["unit_piece"])

    # -- geometry -------------------------------------------------------------------------
    @property
    def text_config(self):
        cfg = self.model.config
        return getattr(cfg, "text_config", None) or cfg

    @property
    def n_layers(self) -> int:
        return int(self.text_config.num_hidden_layers)

    @property
    def n_heads(self) -> int:
        return int(self.text_config.num_attention_heads)

    @property
    def n_kv_heads(self) -> int:
        return int(self.text_config.num_key_value_heads)

    @property
    def head_dim(self) -> int:
        c = self.text_config
        return int(getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.backbone.parameters()).dtype

    def attention_layers(self) -> list[nn.Module]:
        """Self-attention modules in layer order; each has q_proj, k_proj and v_proj."""
        return [layer.self_attn for layer in self.backbone.layers]

    def fingerprint(self) -> str:
        import hashlib

        h = hashlib.sha256(self.model.config.to_json_string().encode())
        h.update(self.name.encode())
        return f"{self.family}-{h.hexdigest()[:16]}"

    # -- template -------------------------------------------------------------------------
    @abstractmethod
    def new_positions(self) -> PositionTracker: ...

    def prefix_piece(self) -> Piece:
        """System prompt and the opening of the user turn; the sink tokens of the stream.
        ChatML by default (every family served here speaks it)."""
        return [self.text_segment(chat.PREFIX)]

    @abstractmethod
    def unit_piece(self, frames: list[np.ndarray], t_start: float) -> Piece:
        """One stream unit: a timestamped wrapper around the frames' visual tokens.

        May be shorter than its frames, even empty: a model may decide that a frame with
        nothing to see contributes no tokens (the default model does; other families never
        do). The engine then counts the frames as encoded but writes no block and uses no
        positions for them; offline inference over the same pieces drops the same frames."""

    def unit_pieces(self, units: list[tuple[list[np.ndarray], float]]) -> list[Piece]:
        """`unit_piece` of several units (of different streams) at once. Families whose vision
        tower takes a batch override this to run it once; the default runs them one by one."""
        direct = getattr(type(self).unit_piece, "direct", type(self).unit_piece)
        return [direct(self, frames, t) for frames, t in units]

    def question_piece(self, question: str) -> Piece:
        """The question, the end of the user turn and the opening of the assistant turn."""
        return [self.text_segment(chat.question(question))]

    @abstractmethod
    def reference_inputs(self, frames: list[tuple[np.ndarray, float]], question: str) -> dict:
        """Keyword arguments for the model's own `generate` over the whole sequence at once
        (offline full-context inference: the exact-mode reference and the offline baseline)."""

    def text_segment(self, text: str) -> Segment:
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        return Segment(ids=ids)

    # -- compute --------------------------------------------------------------------------
    def embed(self, piece: Piece) -> torch.Tensor:
        emb = self.backbone.get_input_embeddings()
        parts = [
            emb(s.ids.to(self.device)) if s.ids is not None else s.embeds.to(self.device, self.dtype)
            for s in piece
        ]
        return torch.cat(parts, dim=0).unsqueeze(0)

    def position_ids(self, positions: torch.Tensor) -> torch.Tensor:
        """[rows, n] -> the shape the decoder expects: [1, n] (1-D) or [3, 1, n] (M-RoPE)."""
        positions = positions.to(self.device)
        return positions if positions.shape[0] == 1 else positions.unsqueeze(1)

    def decoder_inputs(self, embeds: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The decoder's `inputs_embeds` and extra keyword arguments (DeepStack families split
        their wide embeddings here)."""
        return embeds, {}

    def forward(self, embeds: torch.Tensor, positions: torch.Tensor, cache, logits: str = "all") -> torch.Tensor:
        """Run the decoder over embeddings into `cache`; logits for all tokens or the last one."""
        batcher = batching.current()
        if batcher is not None:  # an encode under the scheduler: one forward with other streams'
            return batcher.forward(self, embeds, positions, cache, logits)
        embeds, extra = self.decoder_inputs(embeds)
        out = self.backbone(
            inputs_embeds=embeds,
            position_ids=self.position_ids(positions),
            past_key_values=cache,
            use_cache=True,
            **extra,
        )
        h = out.last_hidden_state
        if logits == "last":
            h = h[:, -1:]
        elif logits == "none":
            return h
        return self.lm_head(h)

    def rotate(self, k: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Apply RoPE at `positions` ([rows, n]) to pre-RoPE keys k [..., heads, n, head_dim]."""
        cos, sin = self.rotary(k, self.position_ids(positions))
        cos, sin = cos[0].unsqueeze(0), sin[0].unsqueeze(0)  # [1, n, d] -> broadcast over heads
        return k * cos + rotate_half(k) * sin
