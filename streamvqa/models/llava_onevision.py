"""LLaVA-OneVision (1-D RoPE): every unit is its own video.

A unit is `Frame at hh:mm:ss: ` + `<video>` × (frames × pooled tokens + 1) + `\n`: the model's
`get_video_features` pools each frame 2x and appends one `image_newline` per video, so a unit
must be modelled as a separate video for chunked encoding to equal the one-shot path
(models.md §2.5 point 4).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Self

import numpy as np
import torch

from streamvqa.models import template as tpl
from streamvqa.models.base import LinearPositions, ModelAdapter, Piece, PositionTracker, Segment
from streamvqa.models.preprocess import HALF, eos_ids_of, group_units, load_local, norm_stats, to_pixels


class LlavaOnevisionAdapter(ModelAdapter):
    """Adapter for model_type llava_onevision (frames squashed to the tower's square input)."""

    def __init__(self, model, tokenizer, path: Path | None = None, name: str = "") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.family = model.config.model_type
        self.name = name or (Path(path).name if path else self.family)
        self.backbone = model.model.language_model
        self.lm_head = model.lm_head
        self.rotary = self.backbone.rotary_emb
        self.eos_ids = eos_ids_of(model, tokenizer)
        cfg = model.config
        self.image_size = int(cfg.vision_config.image_size)
        side = math.ceil(self.image_size // int(cfg.vision_config.patch_size) / 2)
        self.frame_tokens = side * side  # after the model's 2x bilinear pooling
        self.video_id = int(cfg.video_token_index)
        self.mean, self.std = norm_stats(path, HALF, HALF)

    @classmethod
    def from_pretrained(cls, path: Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Self:
        model, tok = load_local(path, device, dtype)
        if model.config.model_type != "llava_onevision":
            raise ValueError(f"{path}: model_type {model.config.model_type!r} is not llava_onevision")
        return cls(model, tok, Path(path))

    # -- template -------------------------------------------------------------------------
    def new_positions(self) -> PositionTracker:
        return LinearPositions()

    def layout_unit(self, t_start: float, visual: Segment) -> Piece:
        return [self.text_segment(tpl.frame_open(t_start)), visual, self.text_segment(tpl.FRAME_CLOSE)]

    def unit_tokens(self, n_frames: int = 1) -> int:
        """Tokens per unit: wrapper text + n_frames * frame_tokens + 1 newline embedding."""
        ph = Segment(ids=torch.zeros(n_frames * self.frame_tokens + 1, dtype=torch.long))
        return sum(s.n for s in self.layout_unit(0.0, ph))

    def pixels(self, frames: list[np.ndarray]) -> torch.Tensor:
        """[n, 3, S, S] normalised pixels of one unit's frames."""
        return torch.stack(
            [to_pixels(f, self.image_size, self.image_size, self.mean, self.std) for f in frames]
        )

    @torch.no_grad()
    def video_embeds(self, frames: list[np.ndarray]) -> torch.Tensor:
        """[n * frame_tokens + 1, hidden] from the model's own tower, projector, pooling, newline."""
        return self.videos_embeds([frames])[0]

    @torch.no_grad()
    def videos_embeds(self, videos: list[list[np.ndarray]]) -> torch.Tensor:
        """`video_embeds` of videos with the same number of frames, as one batch."""
        cfg = self.model.config
        px = torch.stack([self.pixels(f) for f in videos]).to(self.device, self.model.dtype)
        out = self.model.model.get_video_features(
            px,
            vision_feature_layer=cfg.vision_feature_layer,
            vision_feature_select_strategy=cfg.vision_feature_select_strategy,
            return_dict=True,
        )
        return out.pooler_output

    def unit_piece(self, frames: list[np.ndarray], t_start: float) -> Piece:
        if not frames:
            raise ValueError("a unit needs at least one frame")
        return self.layout_unit(t_start, Segment(embeds=self.video_embeds(frames)))

    def unit_pieces(self, units: list[tuple[list[np.ndarray], float]]) -> list[Piece]:
        """Units of the same length through the tower as one batch of videos."""
        out: list[Piece | None] = [None] * len(units)
        by_len: dict[int, list[int]] = {}
        for i, (frames, _) in enumerate(units):
            by_len.setdefault(len(frames), []).append(i)
        for idx in by_len.values():
            for i, e in zip(idx, self.videos_embeds([units[i][0] for i in idx]), strict=True):
                out[i] = self.layout_unit(units[i][1], Segment(embeds=e))
        return out

    def reference_inputs(
        self, frames: list[tuple[np.ndarray, float]], question: str, unit_frames: int = 1
    ) -> dict:
        """input_ids with `<video>` placeholders and pixel_values_videos [units, frames, 3, S, S]
        (one video per unit; the model takes one tensor, so every unit must have unit_frames frames)."""
        ids = [s.ids for s in self.prefix_piece()]
        pix = []
        units = group_units(frames, unit_frames)
        if units and len(units[-1][0]) != len(units[0][0]):
            raise ValueError("LLaVA-OneVision reference needs every unit to have unit_frames frames")
        for unit, t in units:
            n = len(unit) * self.frame_tokens + 1
            ids += [s.ids for s in self.layout_unit(t, Segment(ids=torch.full((n,), self.video_id)))]
            pix.append(self.pixels(unit))
        ids += [s.ids for s in self.question_piece(question)]
        input_ids = torch.cat(ids).unsqueeze(0).to(self.device)
        out = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        if pix:
            out["pixel_values_videos"] = torch.stack(pix).to(self.device, self.model.dtype)
        return out
