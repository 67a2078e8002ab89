"""Input matching (ours): the fewest blocks that together show what the question names.

A question is read as features: each of its tokens (a word) and each adjacent pair of tokens
(a phrase: "red circle"). A unit matches a word by its input token most similar to it (cosine,
clamped at zero, squared) and a phrase by its best *adjacent* pair of input tokens (the lesser
of the two cosines, squared), so a frame showing a red circle matches "red circle" and a frame
showing a red cross beside a blue circle matches only "red" and "circle". Phrases weigh 3, words
0.3: near misses share words, not phrases. A feature counts only by how much better a unit matches
it than the median candidate does, so "the", "where did" and the caption's slots every frame has
add nothing, and a question naming one word ("where did the circle appear?") still finds it.

Blocks are then chosen greedily to *cover* the features: each step takes the block that adds
the most to what the chosen ones already match (its gain), near ties going to the later block,
and stops at `topk` or when a block would add less than `min_gain` of the first one's gain. A
question naming one object gets its frame alone; "which came first, the red star or the red
square?" gets one frame per object; every layer takes the same blocks. Few frames matter: the
default model reads one relevant frame among 24 far worse than alone (docs/benchmarks.md).

It needs a model whose vision connector writes a frame as word-like input tokens: the default
model's frames are compact captions (" two none red circle left blue star top ..."), whose
tokens are mixes of SmolLM2's own word embeddings. For a VLM whose visual tokens are not near
words (Qwen2-VL, SmolVLM) the matches say little; use `rekv` there.

A question may name nothing any block shows ("what digit was shown most recently?"): when no
block matches any of its words or phrases clearly above the median block (unweighted, below
`min_match`), the selection says so (`Selection.named`), and a retained memory kept with
`keep_memory="unmatched"` answers instead, as the present.

Defaults: at most 4 blocks, words 0.3, phrases 3, exponent 2, stop below 0.4 of the first gain,
ties within 0.1%, `min_match` 0 (always named; `hybrid` uses 0.25, a cosine of 0.5). The session
gives each candidate's input embeddings (`RetrievalContext.inputs`) and the question's
(`question_inputs`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from streamvqa.policies.retrieval.base import RetrievalContext, RetrievalOptions, Retriever, Selection


class InputMatchOptions(RetrievalOptions):
    topk: int | None = Field(4, ge=1, description="most blocks chosen; None: all")
    word: float = Field(0.3, ge=0, description="weight of a question word's best match")
    phrase: float = Field(3.0, ge=0, description="weight of an adjacent question word pair's best adjacent match")
    power: float = Field(2.0, gt=0, description="exponent on each match's cosine")
    min_gain: float = Field(0.4, ge=0, le=1, description="stop when a block adds less than this share of the first's gain")
    tie: float = Field(0.001, ge=0, lt=1, description="gains within this share of the best are ties, won by the later block")
    min_match: float = Field(0.0, ge=0, le=1, description="below this clearest single match (a word or phrase, "
                             "unweighted) the question names nothing the blocks show (`Selection.named` is False)")


def match_features(question: torch.Tensor, unit: torch.Tensor, word: float = 0.3, phrase: float = 3.0,
                   power: float = 2.0) -> torch.Tensor:
    """[m + m - 1] matches of a question [m, d] by a unit's input tokens [n, d]: per question
    token its best cosine, then per adjacent question pair the best adjacent unit pair's lesser
    cosine; each clamped at zero, raised to `power` and weighted."""
    m = question.shape[0]
    if unit.shape[0] == 0:
        return torch.zeros(2 * m - 1 if m else 0)
    s = F.normalize(question.float(), dim=-1) @ F.normalize(unit.float(), dim=-1).T  # [m, n]
    words = s.max(dim=1).values.clamp_min(0).pow(power) * word
    if m < 2:
        return words
    if s.shape[1] < 2:
        return torch.cat([words, torch.zeros(m - 1)])
    pairs = torch.minimum(s[:-1, :-1], s[1:, 1:]).max(dim=1).values.clamp_min(0).pow(power) * phrase
    return torch.cat([words, pairs])


def cover(features: torch.Tensor, k: int, min_gain: float, tie: float) -> list[tuple[int, float]]:
    """Greedy coverage of features [f, blocks]: (block, gain) in the order chosen."""
    covered = torch.zeros(features.shape[0])
    chosen: list[tuple[int, float]] = []
    for _ in range(min(k, features.shape[1])):
        gain = (torch.maximum(features, covered[:, None]) - covered[:, None]).sum(dim=0)
        gain[[j for j, _ in chosen]] = -1.0
        best = float(gain.max())
        if chosen and best < min_gain * chosen[0][1]:
            break
        j = int((gain >= best * (1 - tie)).nonzero().max())  # near ties: the later block
        chosen.append((j, float(gain[j])))
        covered = torch.maximum(covered, features[:, j])
    return chosen


class InputMatchRetriever(Retriever):
    Options = InputMatchOptions
    per_layer = False
    needs_inputs = True

    def __init__(self, topk: int | None = 4, word: float = 0.3, phrase: float = 3.0, power: float = 2.0,
                 min_gain: float = 0.4, tie: float = 0.001, min_match: float = 0.0) -> None:
        super().__init__(topk)
        self.word, self.phrase, self.power, self.min_gain, self.tie = word, phrase, power, min_gain, tie
        self.min_match = min_match

    def needs_query(self, n_blocks: int) -> bool:
        return False  # matched on input embeddings: no forward pass of the question

    def features(self, ctx: RetrievalContext) -> torch.Tensor:
        """[features, blocks]: `match_features` above the median block's, clamped at zero."""
        if ctx.inputs is None or ctx.question_inputs is None:
            raise ValueError("input matching needs the blocks' and the question's input embeddings")
        f = torch.stack([match_features(ctx.question_inputs, u, self.word, self.phrase, self.power)
                         for u in ctx.inputs], dim=1)
        return (f - f.median(dim=1, keepdim=True).values).clamp_min(0)

    def select(self, ctx: RetrievalContext) -> Selection:
        n_layers, ids = ctx.query.shape[0], ctx.block_ids
        if self.topk is None or not ids:
            return Selection([list(ids)] * n_layers, dict.fromkeys(ids, 1.0))
        features = self.features(ctx)
        chosen = cover(features, self.topk, self.min_gain, self.tie)
        picked = [ids[j] for j in sorted(j for j, _ in chosen)]
        return Selection([picked] * n_layers, dict.fromkeys(picked, 1.0), {ids[j]: g for j, g in chosen},
                         named=self.strongest(features) >= self.min_match)

    def strongest(self, features: torch.Tensor) -> float:
        """The clearest single match: the most any block matches one question word or phrase
        above the median block, unweighted (cosine ** power): ~0.8 for a word or phrase a frame
        shows, ~0.05 for "what digit was shown most recently?", which names none."""
        m = (features.shape[0] + 1) // 2  # words first, then the m - 1 phrases (`match_features`)
        weights = torch.tensor([self.word] * m + [self.phrase] * (features.shape[0] - m))
        used = weights > 0
        if not features.numel() or not bool(used.any()):
            return 0.0
        return float((features[used] / weights[used, None]).max())
