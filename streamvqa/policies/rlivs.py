"""rLiVS (Dorovatas et al., NeurIPS 2025, arXiv 2510.17364): captions as long-term memory, and
attention-selected visual tokens carried to the next clips as short-term memory.

Per clip of 16 frames (defaults from the code, `recurrent_simple` / `caption_and_select`):
- the clip is encoded on the short-term memory: the tokens selected from the last 16 clips
  (`encode_on = "memory"`);
- the model captions it greedily ("Describe what's happening in this video.", up to
  `caption_tokens`; the code allows 1,024, our default is 64 to keep streaming affordable);
  the caption is stored as text with the clip's time range (the session's `captions`);
- a_j = mean over the generated caption tokens, the selected layers {4, 8, 13, 19} (those the
  model has; all layers on smaller models) and the heads, of the attention from caption tokens
  to the clip's visual token j. The top `selection` = 6.25 % (196 of 3,136) are kept in temporal
  order, the rest of the clip is dropped; selections older than `short_term_clips` clips go.
Answers prefill the captions (MMR-ranked by the retrieval policy `rlivs`) after the retained
tokens. If the model writes no caption token, the prompt's own last-token attention selects.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from streamvqa.policies.memory import Options, RetainContext, Retention, TokenMemory, attention

# the instruction closes the user turn and opens the assistant's (ChatML, every family served here)
PROMPT = "Describe what's happening in this video.<|im_end|>\n<|im_start|>assistant\n"


class RLiVSOptions(Options):
    prompt: str = Field(PROMPT, min_length=1)
    caption_tokens: int = Field(64, ge=0, le=1024, description="longest caption (code: 1,024)")
    selection: float = Field(0.0625, gt=0, le=1, description="fraction of a clip's visual tokens carried on")
    short_term_clips: int = Field(16, ge=1, description="clips whose selections stay (FIFO)")
    layers: list[int] = Field([4, 8, 13, 19], description="layers whose attention selects")


def select_tokens(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Indices (ascending) of the top ceil(fraction * n) scores [n]."""
    k = max(1, math.ceil(fraction * scores.numel()))
    return scores.topk(min(k, scores.numel())).indices.sort().values


class RLiVS(Retention):
    name = "rlivs"
    Options = RLiVSOptions

    def needs(self, memory: TokenMemory, ctx: RetainContext) -> bool:
        return any(memory.units[u].kind == "frames" for u in ctx.new_units if u in memory.units)

    def scratch(self) -> tuple[str, int]:
        return self.options.prompt, self.options.caption_tokens

    def retain(self, memory: TokenMemory, ctx: RetainContext) -> None:
        new = [u for u in ctx.new_units if u in memory.units and memory.units[u].kind == "frames"]
        if not new or not memory.layers:
            return
        o = self.options
        assert ctx.generate is not None and ctx.rotate is not None
        ids, text, queries, positions = ctx.generate(o.prompt, o.caption_tokens)
        if not ids:  # no caption: let the prompt's last token attend instead
            assert ctx.probe is not None
            queries, positions = ctx.probe(o.prompt)
            queries, positions = [q[:, -1:] for q in queries], positions[:, -1:]
        n_layers = len(memory.layers)
        chosen = [i for i in o.layers if i < n_layers] or list(range(n_layers))
        head0 = memory.layers[0]
        in_clip = torch.isin(head0.unit[0], torch.tensor(new)) & head0.visual[0]
        scores = torch.stack([attention(queries[i], positions, memory.layers[i], ctx.rotate).mean(0) for i in chosen]).mean(0)
        clip_idx = in_clip.nonzero().squeeze(1)
        kept_clip = clip_idx[select_tokens(scores[clip_idx], o.selection)] if clip_idx.numel() else clip_idx
        clip_units = sorted(u for u, info in memory.units.items() if info.kind == "frames")
        stale = set(clip_units[:-o.short_term_clips]) if len(clip_units) > o.short_term_clips else set()
        old = ~torch.isin(head0.unit[0], torch.tensor(new + sorted(stale)))
        keep = old.clone()
        keep[kept_clip] = True
        idx = keep.nonzero().squeeze(1)
        # heads and layers hold the same tokens here (no per-head selection in rLiVS)
        memory.keep([idx.unsqueeze(0).expand(m.heads, -1) for m in memory.layers])
        if text.strip() and ctx.add_caption is not None:
            t0 = min(memory.units[u].t_start for u in new if u in memory.units) if any(u in memory.units for u in new) else ctx.now
            ctx.add_caption(t0, ctx.now, text.strip())
