"""The embedded default model: the real SmolLM2-135M-Instruct with a small grounded vision tower.

Like SmolVLM, visual tokens are fed into the language model's input embeddings; unlike it, the
tower and its "words" connector are ours (`streamvqa.models.grounded`), trained on synthetic
scenes while the language model stays frozen. Plain 1-D RoPE.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from streamvqa.models import template
from streamvqa.models.base import LinearPositions, ModelAdapter, Piece, Segment
from streamvqa.models.grounded.lora import MERGED


def empty_frames(parse) -> list[bool]:
    """Frames whose parse shows nothing: count "zero" and digit "none" by the head's argmax,
    the very words the caption would print (class 0 of both heads)."""
    return ((parse.count.argmax(-1) == 0) & (parse.digit.argmax(-1) == 0)).tolist()


class DefaultAdapter(ModelAdapter):
    family = "default"

    def __init__(self, model, tokenizer, vision, name: str = "default") -> None:
        if getattr(vision, "lora", None) is not None and getattr(model, MERGED, None) is not vision.lora:
            raise ValueError("the vision weights carry LM adapters: merge them first (vision.lora.merge_into)")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.vision = vision.eval()
        self.backbone = model.model
        self.lm_head = model.lm_head
        self.rotary = model.model.rotary_emb
        self.name = name
        eos = {tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id}
        self.eos_ids = {int(i) for i in eos if i is not None}

    @classmethod
    def from_pretrained(
        cls, path: Path, device: str = "cpu", dtype: torch.dtype = torch.float32, vision_weights: Path | None = None
    ) -> DefaultAdapter:
        from streamvqa.models.grounded.vision import GroundedVision, default_weights_path

        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
        tok = AutoTokenizer.from_pretrained(path)
        weights = vision_weights or default_weights_path()
        emb = model.get_input_embeddings()
        vision = GroundedVision.load(Path(weights), emb, tok)  # missing or corrupt weights fail here, loudly
        if vision.lora is not None:
            vision.lora.merge_into(model)  # this adapter's own LM copy; the LM weights file is untouched
        return cls(model, tok, vision.to(device), name=f"default:{Path(weights).name}")

    def fingerprint(self) -> str:
        return super().fingerprint() + "-" + self.name.split(":")[-1].split(".")[0]

    def new_positions(self) -> LinearPositions:
        return LinearPositions()

    def prefix_piece(self) -> Piece:
        """The system prompt and user-turn opening, then the trained soft prompt (template.py)."""
        piece = [self.text_segment(template.PREFIX)]
        prompt = getattr(self.vision, "prompt", None)
        if prompt is not None:
            piece.append(Segment(embeds=prompt.detach()))
        return piece

    def unit_piece(self, frames: list[np.ndarray], t_start: float) -> Piece:
        """Per frame: its 11 caption tokens and a newline (12 tokens; no text timestamp, the
        engine keeps each block's time). A frame with nothing to see (`empty_frames`) adds no
        tokens: hundreds of identical empty lines derail the frozen LM on long streams, and
        order in the prompt still is order in time. A unit of empty frames is an empty piece."""
        return self.unit_pieces([(frames, t_start)])[0]

    def unit_pieces(self, units: list[tuple[list[np.ndarray], float]]) -> list[Piece]:
        """Every frame of every unit through the tower at once (frames of one size per batch)."""
        out: list[Piece | None] = [None] * len(units)
        by_shape: dict[tuple, list[int]] = {}
        for i, (frames, _) in enumerate(units):
            by_shape.setdefault(frames[0].shape, []).append(i)
        close = self.text_segment(template.FRAME_CLOSE)
        for idx in by_shape.values():
            batch = torch.from_numpy(np.stack([f for i in idx for f in units[i][0]])).to(self.device)
            parse = self.vision.parse(batch)
            frames = list(zip(self.vision.words(parse), empty_frames(parse), strict=True))
            k = 0
            for i in idx:
                piece: Piece = []
                for vis, empty in frames[k:k + len(units[i][0])]:
                    if not empty:
                        piece += [Segment(embeds=vis), close]
                out[i] = piece
                k += len(units[i][0])
        return out

    def reference_inputs(self, frames: list[tuple[np.ndarray, float]], question: str) -> dict:
        """The whole sequence as input embeddings for `generate` (no vision path in the LM)."""
        piece = self.prefix_piece()
        for frame, t in frames:
            piece += self.unit_piece([frame], t)
        piece += self.question_piece(question)
        embeds = self.embed(piece)
        return {"inputs_embeds": embeds, "attention_mask": torch.ones(embeds.shape[:2], dtype=torch.long, device=self.device)}
