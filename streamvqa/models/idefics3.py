"""Idefics3 and SmolVLM (1-D RoPE): every frame is one image, without splitting.

The chat is the families' published template (Idefics3-8B, SmolVLM2)::

    <bos>System: {system}<end_of_utterance>\nUser: {INTRO}        prefix (the stream's sinks)
    \nFrame from mm:ss:   then per frame of the unit
    <fake_token_around_image><global-img><image>×seq<fake_token_around_image>
    \n\n{question}<end_of_utterance>\nAssistant:                  question

`<bos>` is the tokenizer's (SmolVLM2 `<|im_start|>`, Idefics3-8B `<|begin_of_text|>`). The frame
wrapper is SmolVLM2's video processor's (`FRAME_TIMESTAMP_MESSAGE`, `DEFAULT_MEDIA_OUTTRO`); its
intro names the frame count and duration, which a live stream does not have, so INTRO is a fixed
sentence. Every piece boundary is a newline or a special token, so the pieces tokenized one by one
give the ids of the whole conversation tokenized at once. The image tokens are the model's own
vision tower + connector output (`get_image_features`), so the embeddings equal what the model
merges in itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

import numpy as np
import torch

from streamvqa.models.base import LinearPositions, ModelAdapter, Piece, PositionTracker, Segment
from streamvqa.models.preprocess import HALF, eos_ids_of, group_units, load_local, norm_stats, to_pixels

SYSTEM = "You watch a video and answer questions about it."
INTRO = "You are provided the following frames from a live video.\n"
ANSWER_STYLE = " Answer with one word."


def frame_time(t: float) -> str:
    """SmolVLM2's frame stamp: minutes and seconds (minutes keep counting past the hour)."""
    s = int(t)
    return f"{s // 60:02d}:{s % 60:02d}"


class Idefics3Adapter(ModelAdapter):
    """Adapter for model_type idefics3 and smolvlm (same layout, same model API)."""

    def __init__(self, model, tokenizer, path: Path | None = None, name: str = "") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.family = model.config.model_type  # "idefics3" or "smolvlm"
        self.name = name or (Path(path).name if path else self.family)
        self.backbone = model.model.text_model
        self.lm_head = model.lm_head
        self.rotary = self.backbone.rotary_emb
        self.eos_ids = eos_ids_of(model, tokenizer)
        vc = model.config.vision_config
        self.image_size = int(vc.image_size)
        self.image_seq_len = (self.image_size // int(vc.patch_size)) ** 2 // int(
            model.config.scale_factor
        ) ** 2
        self.mean, self.std = norm_stats(path, HALF, HALF)
        tid = tokenizer.convert_tokens_to_ids
        self.image_id = int(model.config.image_token_id)
        # Idefics3-8B has no <global-img> token (the processor writes it as text): tokenize it.
        self.image_open = self.text_segment("<fake_token_around_image><global-img>").ids
        self.image_close = torch.tensor([tid("<fake_token_around_image>")])
        self.bos = tokenizer.bos_token or "<|im_start|>"

    @classmethod
    def from_pretrained(cls, path: Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Self:
        model, tok = load_local(path, device, dtype)
        if model.config.model_type not in ("idefics3", "smolvlm"):
            raise ValueError(f"{path}: model_type {model.config.model_type!r} is not idefics3/smolvlm")
        return cls(model, tok, Path(path))

    # -- template -------------------------------------------------------------------------
    def new_positions(self) -> PositionTracker:
        return LinearPositions()

    def pixels(self, frames: list[np.ndarray]) -> torch.Tensor:
        """[n, 3, S, S] normalised pixels of the frames (squashed to the tower's square input)."""
        return torch.stack(
            [to_pixels(f, self.image_size, self.image_size, self.mean, self.std) for f in frames]
        )

    def prefix_piece(self) -> Piece:
        return [self.text_segment(f"{self.bos}System: {SYSTEM}<end_of_utterance>\nUser: {INTRO}")]

    def question_piece(self, question: str) -> Piece:
        return [self.text_segment(f"\n\n{question.strip()}{ANSWER_STYLE}<end_of_utterance>\nAssistant:")]

    def layout_unit(self, t_start: float, visuals: list[Segment]) -> Piece:
        """The unit's segments around per-frame visual segments (embeddings or placeholder ids).
        The engine hands a unit only its start time: the unit's frames follow one stamp (a frame
        is its own unit at the default unit size, as in the processor's layout)."""
        piece: Piece = [self.text_segment(f"\nFrame from {frame_time(t_start)}:")]
        for v in visuals:
            piece += [Segment(ids=self.image_open), v, Segment(ids=self.image_close)]
        return piece

    @torch.no_grad()
    def image_embeds(self, frames: list[np.ndarray]) -> list[torch.Tensor]:
        """Per frame [image_seq_len, hidden] from the model's own vision tower and connector."""
        px = self.pixels(frames).to(self.device, self.model.dtype).unsqueeze(0)
        out = self.model.model.get_image_features(px, return_dict=True).pooler_output
        feats = (
            torch.cat(list(out), dim=0) if isinstance(out, (list, tuple)) else out.reshape(-1, out.shape[-1])
        )
        return list(feats.reshape(len(frames), self.image_seq_len, -1))

    def unit_piece(self, frames: list[np.ndarray], t_start: float) -> Piece:
        return self.layout_unit(t_start, [Segment(embeds=e) for e in self.image_embeds(frames)])

    def unit_pieces(self, units: list[tuple[list[np.ndarray], float]]) -> list[Piece]:
        """The frames of every unit through the tower as one batch of images."""
        embeds = iter(self.image_embeds([f for frames, _ in units for f in frames]))
        return [self.layout_unit(t, [Segment(embeds=next(embeds)) for _ in frames]) for frames, t in units]

    def unit_tokens(self, n_frames: int = 1) -> int:
        """Tokens per unit of `n_frames` frames (the same for every timestamp under 100 minutes)."""
        return sum(
            s.n
            for s in self.layout_unit(
                0.0, [Segment(ids=torch.zeros(self.image_seq_len, dtype=torch.long))] * n_frames
            )
        )

    def reference_inputs(
        self, frames: list[tuple[np.ndarray, float]], question: str, unit_frames: int = 1
    ) -> dict:
        ids = [s.ids for s in self.prefix_piece()]
        pix = []
        ph = Segment(ids=torch.full((self.image_seq_len,), self.image_id, dtype=torch.long))
        for unit, t in group_units(frames, unit_frames):
            ids += [s.ids for s in self.layout_unit(t, [ph] * len(unit))]
            pix.append(self.pixels(unit))
        ids += [s.ids for s in self.question_piece(question)]
        input_ids = torch.cat(ids).unsqueeze(0).to(self.device)
        out = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        if pix:
            out["pixel_values"] = torch.cat(pix).unsqueeze(0).to(self.device, self.model.dtype)
        return out
