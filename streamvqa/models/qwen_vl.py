"""Qwen2-VL and Qwen2.5-VL (M-RoPE): every unit is its own video block ("layout A", models.md §2.4).

A unit is `Frame at hh:mm:ss: <|vision_start|>` + the unit's video tokens + `<|vision_end|>\n`.
Frames are resized to a fixed size (a multiple of patch * merge), patchified as the Qwen video
processor does (a 1-frame unit is padded to the temporal patch size by repeating the frame) and
encoded by the model's own `get_video_features`. Positions come from `MRopePositions`, whose rule
is that of `get_rope_index` in transformers 5.23 (checked in tests); the model's own per-chunk
positions are wrong for streaming, so every forward passes explicit position_ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

import numpy as np
import torch

from streamvqa.models import template as tpl
from streamvqa.models.base import ModelAdapter, MRopePositions, Piece, PositionTracker, Segment
from streamvqa.models.preprocess import (
    CLIP_MEAN,
    CLIP_STD,
    eos_ids_of,
    group_units,
    load_local,
    norm_stats,
    qwen_patchify,
    to_pixels,
)

DEFAULT_FRAME = (448, 448)  # 32 x 32 patches -> 256 LLM tokens per temporal patch


class QwenVLAdapter(ModelAdapter):
    """Adapter for model_type qwen2_vl and qwen2_5_vl.

    `frame_size` (H, W) is the size frames are resized to: the `streamvqa_frame_size` of the
    config when it has one (tiny models), else 448 x 448. `second_per_grid` (Qwen2.5-VL only) is
    the seconds a temporal patch spans, i.e. temporal_patch_size / fps; it scales the temporal
    M-RoPE index (interval = tokens_per_second * second_per_grid) and only matters for units of
    more than temporal_patch_size frames.
    """

    def __init__(
        self,
        model,
        tokenizer,
        path: Path | None = None,
        name: str = "",
        frame_size: tuple[int, int] | None = None,
        second_per_grid: float = 1.0,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.family = model.config.model_type  # "qwen2_vl" or "qwen2_5_vl"
        self.name = name or (Path(path).name if path else self.family)
        self.backbone = model.model.language_model
        self.lm_head = model.lm_head
        self.rotary = self.backbone.rotary_emb
        self.eos_ids = eos_ids_of(model, tokenizer)
        vc = model.config.vision_config
        self.patch_size = int(vc.patch_size)
        self.merge = int(vc.spatial_merge_size)
        self.tps = int(vc.temporal_patch_size)
        fs = frame_size or getattr(model.config, "streamvqa_frame_size", None) or DEFAULT_FRAME
        self.frame_size = (int(fs[0]), int(fs[1]))
        step = self.patch_size * self.merge
        if self.frame_size[0] % step or self.frame_size[1] % step:
            raise ValueError(f"frame_size {self.frame_size} must be a multiple of {step}")
        self.second_per_grid = float(second_per_grid)
        self.mean, self.std = norm_stats(path, CLIP_MEAN, CLIP_STD)
        cfg = model.config
        self.video_id = int(cfg.video_token_id)
        self.vstart_id = int(cfg.vision_start_token_id)
        self.vend_id = int(cfg.vision_end_token_id)

    @classmethod
    def from_pretrained(
        cls,
        path: Path,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        frame_size: tuple[int, int] | None = None,
        second_per_grid: float = 1.0,
    ) -> Self:
        model, tok = load_local(path, device, dtype)
        if model.config.model_type not in ("qwen2_vl", "qwen2_5_vl"):
            raise ValueError(f"{path}: model_type {model.config.model_type!r} is not qwen2_vl/qwen2_5_vl")
        return cls(model, tok, Path(path), frame_size=frame_size, second_per_grid=second_per_grid)

    # -- geometry -------------------------------------------------------------------------
    @property
    def interval(self) -> float:
        """Temporal M-RoPE step per temporal patch (1 for Qwen2-VL)."""
        if self.family == "qwen2_5_vl":
            return float(self.model.config.vision_config.tokens_per_second) * self.second_per_grid
        return 1.0

    def unit_grid(self, n_frames: int) -> tuple[int, int, int]:
        """(t, h, w) in LLM tokens of a unit of `n_frames` frames."""
        h, w = self.frame_size
        step = self.patch_size * self.merge
        return (-(-n_frames // self.tps), h // step, w // step)

    def unit_tokens(self, n_frames: int = 1) -> int:
        """Tokens per unit (wrapper text + vision block), the same for every timestamp."""
        t, h, w = self.unit_grid(n_frames)
        ph = Segment(ids=torch.zeros(t * h * w, dtype=torch.long))
        return sum(s.n for s in self.layout_unit(0.0, ph))

    # -- template -------------------------------------------------------------------------
    def new_positions(self) -> PositionTracker:
        return MRopePositions(interval=self.interval)

    def layout_unit(self, t_start: float, visual: Segment) -> Piece:
        return [
            self.text_segment(tpl.frame_open(t_start)),
            Segment(ids=torch.tensor([self.vstart_id])),
            visual,
            Segment(ids=torch.tensor([self.vend_id])),
            self.text_segment(tpl.FRAME_CLOSE),
        ]

    def pixels(self, frames: list[np.ndarray]) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """Flattened video patches of one unit and its patch grid (t, h, w) before merging."""
        h, w = self.frame_size
        x = torch.stack([to_pixels(f, h, w, self.mean, self.std) for f in frames])
        return qwen_patchify(x, self.patch_size, self.merge, self.tps)

    @torch.no_grad()
    def video_embeds(self, frames: list[np.ndarray]) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """[t*h*w, hidden] from the model's own vision tower + merger, and the LLM grid (t, h, w)."""
        px, (gt, gh, gw) = self.pixels(frames)
        grid = torch.tensor([[gt, gh, gw]], device=self.device)
        out = self.model.model.get_video_features(
            px.to(self.device, self.model.dtype), grid, return_dict=True
        )
        feats = torch.cat(list(out.pooler_output), dim=0)
        return feats, (gt, gh // self.merge, gw // self.merge)

    def unit_piece(self, frames: list[np.ndarray], t_start: float) -> Piece:
        if not frames:
            raise ValueError("a unit needs at least one frame")
        feats, grid = self.video_embeds(frames)
        return self.layout_unit(t_start, Segment(embeds=feats, grid=grid))

    @torch.no_grad()
    def unit_pieces(self, units: list[tuple[list[np.ndarray], float]]) -> list[Piece]:
        """Every unit as one video of a single tower call (the tower keeps videos apart)."""
        if any(not frames for frames, _ in units):
            raise ValueError("a unit needs at least one frame")
        pix = [self.pixels(frames) for frames, _ in units]
        grid = torch.tensor([list(g) for _, g in pix], device=self.device)
        px = torch.cat([p for p, _ in pix]).to(self.device, self.model.dtype)
        out = self.model.model.get_video_features(px, grid, return_dict=True)
        return [
            self.layout_unit(t, Segment(embeds=feats, grid=(gt, gh // self.merge, gw // self.merge)))
            for (_, t), feats, (_, (gt, gh, gw)) in zip(units, out.pooler_output, pix, strict=True)
        ]

    def reference_inputs(
        self, frames: list[tuple[np.ndarray, float]], question: str, unit_frames: int = 1
    ) -> dict:
        """input_ids with <|video_pad|> placeholders, mm_token_type_ids (2 on pads),
        pixel_values_videos, video_grid_thw (one video per unit) and, for Qwen2.5-VL,
        second_per_grid_ts; the model computes positions itself with `get_rope_index`."""
        ids = [s.ids for s in self.prefix_piece()]
        pix, grids = [], []
        for unit, t in group_units(frames, unit_frames):
            px, (gt, gh, gw) = self.pixels(unit)
            n = gt * (gh // self.merge) * (gw // self.merge)
            ids += [s.ids for s in self.layout_unit(t, Segment(ids=torch.full((n,), self.video_id)))]
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
            if self.family == "qwen2_5_vl":
                out["second_per_grid_ts"] = torch.tensor(
                    [self.second_per_grid] * len(grids), device=self.device
                )
        return out
