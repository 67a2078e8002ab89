"""Qwen3-VL (interleaved M-RoPE, DeepStack): the stream is one video, laid out as its processor does.

`Qwen3VLProcessor` expands a video into one block per temporal patch, each after its timestamp:
`<1.5 seconds><|vision_start|><|video_pad|>×n<|vision_end|>`, inside the chat template's own
`<|vision_start|> … <|vision_end|>`. Here the template's outer `<|vision_start|>` ends the prefix
(the sinks), every unit is its temporal patches with their timestamps, and the question opens
with the outer `<|vision_end|>`: offline, that is the processor's layout of one video whose
temporal patches are the units'.

Positions: `get_rope_index` of 5.23 splits every video grid into t = 1 blocks, so
`MRopePositions` (text runs, then s + row / s + col per block, next text at s + max(h, w)) is
exact; the interleaving of the T/H/W frequencies happens inside the model's rotary module, which
`rotate` calls. DeepStack: the vision tower's intermediate features (`deepstack_features`) are
added into the hidden states after the first decoder layers at the visual tokens. They travel
with each visual token as extra columns of its embedding (base.Segment) and are handed to the
stock `Qwen3VLTextModel` through its own `visual_pos_masks` / `deepstack_visual_embeds` arguments.
Keys are normalised per head (k_norm) before RoPE, so the position-free keys are k_norm's output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from streamvqa.models import template as chat
from streamvqa.models.base import ModelAdapter, MRopePositions, Piece, PositionTracker, Segment
from streamvqa.models.preprocess import (
    HALF,
    eos_ids_of,
    group_units,
    load_local,
    norm_stats,
    qwen_patchify,
    to_pixels,
)

DEFAULT_FRAME = (448, 448)  # 28 x 28 patches of 16 -> 196 LLM tokens per temporal patch


class HeadsFlattened:
    """A per-head norm seen by forward hooks as a projection: its [..., heads, d] output is
    handed to the hook as [..., heads * d], the shape `q_proj` / `k_proj` outputs have. Hooks
    observe only: what they return never replaces the norm's output."""

    def __init__(self, norm: nn.Module) -> None:
        self.norm = norm

    def register_forward_hook(self, hook):
        def observe(module, inputs, out) -> None:
            hook(module, inputs, out.flatten(-2))

        return self.norm.register_forward_hook(observe)


class PreRopeProjections:
    """What the engine's capture hooks (`q_proj`, `k_proj`, `v_proj`) must observe to get the
    position-free queries and keys of a q/k-normalised attention: the norms' outputs."""

    def __init__(self, attn: nn.Module) -> None:
        self.q_proj, self.k_proj = HeadsFlattened(attn.q_norm), HeadsFlattened(attn.k_norm)
        self.v_proj = attn.v_proj


def timestamp(t: float) -> str:
    """The processor's timestamp of a temporal patch (`<{t:.1f} seconds>`)."""
    return f"<{t:.1f} seconds>"


class Qwen3VLAdapter(ModelAdapter):
    """Adapter for model_type qwen3_vl.

    `frame_size` (H, W): frames are resized to it (a multiple of patch * merge); the config's
    `streamvqa_frame_size` when it has one (tiny models), else 448 x 448. A temporal patch of a
    unit is stamped with the unit's start time: the engine hands the adapter only that time (a
    one-frame unit is the processor's timestamp exactly: the mean of a frame and its padding copy).
    """

    family = "qwen3_vl"

    def __init__(
        self,
        model,
        tokenizer,
        path: Path | None = None,
        name: str = "",
        frame_size: tuple[int, int] | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name or (Path(path).name if path else self.family)
        self.backbone = model.model.language_model
        self.lm_head = model.lm_head
        self.rotary = self.backbone.rotary_emb
        self.eos_ids = eos_ids_of(model, tokenizer)
        cfg = model.config
        vc = cfg.vision_config
        self.patch_size = int(vc.patch_size)
        self.merge = int(vc.spatial_merge_size)
        self.tps = int(vc.temporal_patch_size)
        self.deepstack = len(vc.deepstack_visual_indexes)
        self.hidden = int(self.text_config.hidden_size)
        fs = frame_size or getattr(cfg, "streamvqa_frame_size", None) or DEFAULT_FRAME
        self.frame_size = (int(fs[0]), int(fs[1]))
        step = self.patch_size * self.merge
        if self.frame_size[0] % step or self.frame_size[1] % step:
            raise ValueError(f"frame_size {self.frame_size} must be a multiple of {step}")
        self.mean, self.std = norm_stats(path, HALF, HALF)
        self.video_id = int(cfg.video_token_id)
        self.vstart_id = int(cfg.vision_start_token_id)
        self.vend_id = int(cfg.vision_end_token_id)
        self._pre_rope = [PreRopeProjections(layer.self_attn) for layer in self.backbone.layers]

    @classmethod
    def from_pretrained(
        cls,
        path: Path,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        frame_size: tuple[int, int] | None = None,
    ) -> Self:
        model, tok = load_local(path, device, dtype)
        if model.config.model_type != "qwen3_vl":
            raise ValueError(f"{path}: model_type {model.config.model_type!r} is not qwen3_vl")
        return cls(model, tok, Path(path), frame_size=frame_size)

    # -- geometry -------------------------------------------------------------------------
    def attention_layers(self) -> list[PreRopeProjections]:
        return self._pre_rope

    def unit_grid(self, n_frames: int) -> tuple[int, int, int]:
        """(temporal patches, h, w) in LLM tokens of a unit of `n_frames` frames."""
        h, w = self.frame_size
        step = self.patch_size * self.merge
        return (-(-n_frames // self.tps), h // step, w // step)

    def unit_tokens(self, n_frames: int = 1, t_start: float = 0.0) -> int:
        """Tokens of a unit (its timestamps' text length varies with the time, as in the processor)."""
        t, h, w = self.unit_grid(n_frames)
        ph = [Segment(ids=torch.zeros(h * w, dtype=torch.long))] * t
        return sum(s.n for s in self.layout_unit(t_start, ph))

    # -- template -------------------------------------------------------------------------
    def new_positions(self) -> PositionTracker:
        return MRopePositions()

    def prefix_piece(self) -> Piece:
        """System turn, the user turn's opening and the video's outer <|vision_start|>."""
        return [self.text_segment(chat.PREFIX), Segment(ids=torch.tensor([self.vstart_id]))]

    def question_piece(self, question: str) -> Piece:
        """The video's outer <|vision_end|>, the question, the assistant turn's opening."""
        return [Segment(ids=torch.tensor([self.vend_id])), self.text_segment(chat.question(question))]

    def layout_unit(self, t_start: float, patches: list[Segment]) -> Piece:
        piece: Piece = []
        for v in patches:
            piece += [
                self.text_segment(timestamp(t_start)),
                Segment(ids=torch.tensor([self.vstart_id])),
                v,
                Segment(ids=torch.tensor([self.vend_id])),
            ]
        return piece

    def pixels(self, frames: list[np.ndarray]) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """Flattened video patches of one unit and its patch grid (t, h, w) before merging."""
        h, w = self.frame_size
        x = torch.stack([to_pixels(f, h, w, self.mean, self.std) for f in frames])
        return qwen_patchify(x, self.patch_size, self.merge, self.tps)

    @torch.no_grad()
    def video_embeds(self, frames: list[np.ndarray]) -> list[Segment]:
        """One segment per temporal patch: [h*w, hidden * (1 + L)] (merger output, then the L
        DeepStack features) from the model's own vision tower, with its grid (1, h, w)."""
        px, (gt, gh, gw) = self.pixels(frames)
        grid = torch.tensor([[gt, gh, gw]], device=self.device)
        out = self.model.model.get_video_features(px.to(self.device, self.model.dtype), grid, return_dict=True)
        cols = [torch.cat(list(out.pooler_output))] + [torch.cat(list(f)) for f in out.deepstack_features]
        wide = torch.cat(cols, dim=-1)
        h, w = gh // self.merge, gw // self.merge
        return [Segment(embeds=e, grid=(1, h, w)) for e in wide.split(h * w)]

    def unit_piece(self, frames: list[np.ndarray], t_start: float) -> Piece:
        if not frames:
            raise ValueError("a unit needs at least one frame")
        return self.layout_unit(t_start, self.video_embeds(frames))

    @torch.no_grad()
    def unit_pieces(self, units: list[tuple[list[np.ndarray], float]]) -> list[Piece]:
        """Every unit as one video of a single tower call (the tower keeps videos apart)."""
        if any(not frames for frames, _ in units):
            raise ValueError("a unit needs at least one frame")
        pix = [self.pixels(frames) for frames, _ in units]
        grid = torch.tensor([list(g) for _, g in pix], device=self.device)
        px = torch.cat([p for p, _ in pix]).to(self.device, self.model.dtype)
        out = self.model.model.get_video_features(px, grid, return_dict=True)
        pieces = []
        for i, ((_, t), (_, (_, gh, gw))) in enumerate(zip(units, pix, strict=True)):
            wide = torch.cat([out.pooler_output[i]] + [f[i] for f in out.deepstack_features], dim=-1)
            h, w = gh // self.merge, gw // self.merge
            pieces.append(self.layout_unit(t, [Segment(embeds=e, grid=(1, h, w)) for e in wide.split(h * w)]))
        return pieces

    # -- compute --------------------------------------------------------------------------
    @property
    def width(self) -> int:
        return self.hidden * (1 + self.deepstack)

    def embed(self, piece: Piece) -> torch.Tensor:
        """[1, n, width]: text rows are their input embeddings with zero DeepStack columns."""
        table = self.backbone.get_input_embeddings()
        parts = []
        for s in piece:
            if s.ids is not None:
                parts.append(F.pad(table(s.ids.to(self.device)), (0, self.width - self.hidden)))
            else:
                parts.append(s.embeds.to(self.device, self.dtype))
        return torch.cat(parts, dim=0).unsqueeze(0)

    def decoder_inputs(self, embeds: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Split wide embeddings: rows with DeepStack features are the visual positions (adding
        the zero rows of text would change nothing, so they are left out)."""
        if embeds.shape[-1] == self.hidden:  # decode steps: plain token embeddings
            return embeds, {}
        x, ds = embeds[..., : self.hidden], embeds[..., self.hidden :]
        mask = ds.ne(0).any(-1)
        if not bool(mask.any()):
            return x, {}
        feats = ds[mask].view(-1, self.deepstack, self.hidden)
        return x, {"visual_pos_masks": mask, "deepstack_visual_embeds": list(feats.unbind(1))}

    # -- offline reference ----------------------------------------------------------------
    def reference_inputs(
        self, frames: list[tuple[np.ndarray, float]], question: str, unit_frames: int = 1
    ) -> dict:
        """input_ids with <|video_pad|> placeholders, mm_token_type_ids (2 on pads),
        pixel_values_videos and video_grid_thw (one video per unit; `get_rope_index` splits it
        into its temporal patches); the model computes positions and DeepStack itself."""
        ids = [s.ids for s in self.prefix_piece()]
        pix, grids = [], []
        for unit, t in group_units(frames, unit_frames):
            px, (gt, gh, gw) = self.pixels(unit)
            n = (gh // self.merge) * (gw // self.merge)
            ph = [Segment(ids=torch.full((n,), self.video_id))] * gt
            ids += [s.ids for s in self.layout_unit(t, ph)]
            pix.append(px)
            grids.append([gt, gh, gw])
        ids += [s.ids for s in self.question_piece(question)]
        input_ids = torch.cat(ids).unsqueeze(0).to(self.device)
        out = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "mm_token_type_ids": (input_ids == self.video_id).int() * 2,
        }
        if pix:
            out["pixel_values_videos"] = torch.cat(pix).to(self.device, self.model.dtype)
            out["video_grid_thw"] = torch.tensor(grids, device=self.device)
        return out
