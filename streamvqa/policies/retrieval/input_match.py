"""Input matching (ours): blocks ranked by how well they show what the question names.

Each question token is matched to its most similar input token of a unit in the LM's input
embedding space (cosine); the unit's score is the sum over question tokens of that best match,
clamped at zero and squared, so a question word a unit shows ("star", "red") counts far more
than the weak matches every unit has for "what" or "the". Every layer takes the same top-k.

It needs a model whose vision connector writes a frame as word-like input tokens: the default
model's frames are compact captions (" two none red circle left blue star top ..."), whose
tokens are mixes of SmolLM2's own word embeddings. For a VLM whose visual tokens are not near
words (Qwen2-VL, SmolVLM) the scores say little; use `rekv` there.

Defaults: topk 64 blocks (as ReKV), exponent 2. The session gives each candidate's input
embeddings (`RetrievalContext.inputs`) and the question's (`question_inputs`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from streamvqa.policies.retrieval.base import RetrievalContext, Retriever, TopKOptions


class InputMatchOptions(TopKOptions):
    power: float = Field(2.0, gt=0, description="exponent on each question token's best cosine")


def match_scores(question: torch.Tensor, units: list[torch.Tensor], power: float = 2.0) -> torch.Tensor:
    """[units] scores: question [m, d] and each unit's input embeddings [n, d]."""
    q = F.normalize(question.float(), dim=-1)
    out = torch.zeros(len(units))
    for i, u in enumerate(units):
        if u.shape[0]:
            best = (q @ F.normalize(u.float(), dim=-1).T).max(dim=1).values
            out[i] = best.clamp_min(0).pow(power).sum()
    return out


class InputMatchRetriever(Retriever):
    Options = InputMatchOptions
    per_layer = False
    needs_inputs = True

    def __init__(self, topk: int | None = 64, score_mass: float | None = None, min_blocks: int = 1,
                 power: float = 2.0) -> None:
        super().__init__(topk, score_mass, min_blocks)
        self.power = power

    def needs_query(self, n_blocks: int) -> bool:
        return False  # scores from input embeddings: no forward pass of the question

    def score(self, ctx: RetrievalContext) -> torch.Tensor:
        if ctx.inputs is None or ctx.question_inputs is None:
            raise ValueError("input matching needs the blocks' and the question's input embeddings")
        scores = match_scores(ctx.question_inputs, ctx.inputs, self.power)
        return scores.unsqueeze(0).expand(ctx.query.shape[0], -1)
