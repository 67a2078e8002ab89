"""Token sequences in the serving layout of `template.py`, for training and offline evaluation.

A sequence is PREFIX, the soft prompt, then per frame the visual tokens + FRAME_CLOSE, then one
or more question turns. Visual positions are marked with -1 and soft-prompt positions with -2 in
`ids`, filled by `embed`; `labels` hold the answer tokens (and the closing <|im_end|>) only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from streamvqa.models import template

END = "<|im_end|>"
NEXT_TURN = "\n<|im_start|>user\n"
IGNORE = -100
VISUAL = -1
PROMPT = -2


@dataclass
class Sample:
    """Frames with their timestamps and (question, answer) turns, plus the question types."""

    frames: list[np.ndarray]
    times: list[float]
    turns: list[tuple[str, str]]
    types: list[str] = field(default_factory=list)


class Tokens:
    """Cached tokenisation of the template strings."""

    def __init__(self, tokenizer) -> None:
        self.tok = tokenizer
        self._cache: dict[str, list[int]] = {}

    def __call__(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            ids = self.tok(text, add_special_tokens=False)["input_ids"]
            if len(self._cache) < 50_000:
                self._cache[text] = ids
        return list(ids)


def build(sample: Sample, toks: Tokens, n_visual: int, answers: bool = True,
          n_prompt: int = 0) -> tuple[list[int], list[int]]:
    """ids (-1 at visual slots, -2 at soft-prompt slots) and labels for one sample. Without
    answers: ends at the first question's ANSWER_OPEN (what serving feeds before generating)."""
    ids = toks(template.PREFIX) + [PROMPT] * n_prompt
    close = toks(template.FRAME_CLOSE)
    for _ in sample.times:
        ids += [VISUAL] * n_visual + close
    labels = [IGNORE] * len(ids)
    for k, (q, a) in enumerate(sample.turns):
        qi = toks(template.question(q)) if k == 0 else toks(NEXT_TURN + template.question(q))
        ids += qi
        labels += [IGNORE] * len(qi)
        if not answers:
            break
        ai = toks(template.answer(a) + END)
        ids += ai
        labels += ai
    return ids, labels


def collate(samples: list[Sample], toks: Tokens, n_visual: int, pad_id: int, n_prompt: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded batch: ids, labels, attention mask, and all frames stacked in order."""
    built = [build(s, toks, n_visual, n_prompt=n_prompt) for s in samples]
    n = max(len(i) for i, _ in built)
    ids = torch.full((len(samples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(samples), n), dtype=torch.long)
    for b, (i, lab) in enumerate(built):
        ids[b, : len(i)] = torch.tensor(i)
        labels[b, : len(lab)] = torch.tensor(lab)
        mask[b, : len(i)] = 1
    frames = [torch.from_numpy(np.array(f, dtype=np.uint8)) for s in samples for f in s.frames]
    return {"ids": ids, "labels": labels, "mask": mask, "frames": frames}


def embed(ids: torch.Tensor, frames: list[torch.Tensor], vision, lm_embedding: torch.nn.Embedding) -> torch.Tensor:
    """Input embeddings with the visual slots (-1) filled in row-major order of the frames and
    the soft-prompt slots (-2) with the vision module's `prompt` (when it has one)."""
    slot = ids == VISUAL
    emb = lm_embedding(ids.clamp(min=0))
    prompt = ids == PROMPT
    if prompt.any():
        rows = int(prompt.any(-1).sum())
        fill = vision.prompt.to(emb.dtype).unsqueeze(0).expand(rows, -1, -1).reshape(-1, emb.shape[-1])
        emb = emb.masked_scatter(prompt.unsqueeze(-1), fill)
    if frames:
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, f in enumerate(frames):
            by_size.setdefault(tuple(f.shape), []).append(i)
        vis = torch.empty(len(frames), vision.n_tokens, emb.shape[-1], dtype=emb.dtype, device=emb.device)
        for idx in by_size.values():
            vis[idx] = vision(torch.stack([frames[i] for i in idx]).to(emb.device)).to(emb.dtype)
        emb = emb.masked_scatter(slot.unsqueeze(-1), vis.reshape(-1, emb.shape[-1]))
    return emb
