"""StreamingVLM (Xu et al., arXiv 2510.09608): attention sinks, a short vision window and a text
window, with contiguous positions so they stay bounded however long the stream runs.

Retention, applied after every unit (`process_past_kv` in the authors' code):
- the sink (system prompt) is always kept (it is the session's sink, outside this memory);
- visual tokens of units that ended more than `vision_window_s` seconds before the newest frame
  are evicted (code default: 16 rounds of 1 s = 16 s);
- the text left behind by those units (our frame wrappers; the paper's past commentary) forms
  the "previous text": its first `text_sink` (512) and last `text_window` (512) tokens are kept,
  the middle is pruned.
Positions are re-laid contiguously (the paper's `pos_mode="shrink"`): preset `positions =
"contiguous"` and encoding on the retained memory. The paper's model is fine-tuned for this
layout; on the models served here it is training-free.
"""

from __future__ import annotations

import torch
from pydantic import Field

from streamvqa.policies.memory import LayerMemory, Options, RetainContext, Retention, TokenMemory


class StreamingVLMOptions(Options):
    vision_window_s: float = Field(16.0, ge=0, description="seconds of vision kept (the paper's window)")
    text_sink: int = Field(512, ge=0, description="first tokens of the previous text kept")
    text_window: int = Field(512, ge=0, description="last tokens of the previous text kept")


def keep_mask(mem: LayerMemory, t_end: torch.Tensor, now: float, o: StreamingVLMOptions) -> torch.Tensor:
    """[H, n] tokens StreamingVLM keeps: the whole of units inside the vision window; of older
    units only text, and of that text only the first text_sink and last text_window tokens."""
    old = t_end[mem.unit] < now - o.vision_window_s  # unit left the vision window
    previous_text = old & ~mem.visual
    rank = previous_text.long().cumsum(dim=1) - 1  # order within the previous text, per head
    total = previous_text.sum(dim=1, keepdim=True)
    in_text_window = (rank < o.text_sink) | (rank >= total - o.text_window)
    return ~old | (previous_text & in_text_window)


class StreamingVLM(Retention):
    name = "streamingvlm"
    Options = StreamingVLMOptions

    def needs(self, memory: TokenMemory, ctx: RetainContext) -> bool:
        return True  # the windows apply whatever the budget

    def retain(self, memory: TokenMemory, ctx: RetainContext) -> None:
        if not memory.layers:
            return
        t_end = torch.full((max(memory.units) + 1,), float("inf"))
        for u, info in memory.units.items():
            t_end[u] = info.t_end
        masks = [keep_mask(mem, t_end, ctx.now, self.options) for mem in memory.layers]
        if all(bool(m.all()) for m in masks):
            return
        # no per-head selection here: every head holds the same tokens, so counts agree
        memory.keep([m[:1].nonzero()[:, 1].unsqueeze(0).expand(m.shape[0], -1) for m in masks])
