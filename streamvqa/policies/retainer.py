"""Stage 5 mechanics: a stream's retained memory under its retention policy and budgets.

The `Retainer` owns the `TokenMemory` and runs the policy (`memory.Retention` subclasses, one
file per method) after every encoded batch of units, then enforces the budgets:
`memory_tokens` per layer and `budget_bytes["memory"]` (tokens and captions), oldest first if a
policy left the memory over. At question time it chooses which units each layer's answer cache
holds (`select`) and gives their tokens per layer (`answer_layers`); the session places them.

With `demote`, every unit's original block is in the store too (the session writes it), so
retrieval can bring back what retention dropped: such originals travel in
`Selection.originals` and replace the memory's copy of their unit.
`keep_memory` says whether an answer reads the whole memory beside what retrieval brings back
(True), or only what retrieval chooses among the memory's and the dropped units alike, the whole
memory when the question names nothing ("unmatched").

The model runs the policy may ask for (a probe text, a generated caption) are callables the
session passes per call; nothing here touches the model or keeps a reference to the session
(a cycle would keep a closed stream's tensors alive until the cycle collector ran).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from streamvqa.policies.memory import (
    LayerMemory,
    RetainContext,
    Retention,
    TokenMemory,
    TokenMeta,
    UnitInfo,
    cat_layers,
    drop_units,
    enforce_fifo,
    sort_units,
    unit_layers,
)
from streamvqa.policies.retrieval.base import AllBlocks, Caption, Retriever, Selection, WindowOnly
from streamvqa.store.base import StreamIndex
from streamvqa.store.block import Block

Probe = Callable[[str], tuple[list[torch.Tensor], torch.Tensor]]
Generate = Callable[[str, int], tuple[list[int], str, list[torch.Tensor], torch.Tensor]]
Rotate = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# candidates (unit ids, rep keys [n, L, H, d], times) -> the retriever's selection over them
Retrieve = Callable[[list[int], torch.Tensor, list[tuple[float, float]]], Selection]


class Retainer:
    def __init__(self, policy: Retention, memory_tokens: int | None, memory_bytes: int | None,
                 rotate: Rotate, n_heads: int, keep_memory: Literal[False, True, "unmatched"] = False) -> None:
        self.policy = policy
        self.keep_memory = keep_memory  # True or "unmatched": the module docstring
        self.memory = TokenMemory()
        self.max_tokens = memory_tokens  # per layer (already capped by the byte budget)
        self.max_bytes = memory_bytes
        self.rotate, self.n_heads = rotate, n_heads
        # pre-RoPE queries of the newest unit (policies that score with them), until retained
        self.unit_queries: tuple[list[torch.Tensor], torch.Tensor, torch.Tensor] | None = None

    @property
    def wants_unit_queries(self) -> bool:
        return self.policy.unit_queries

    def append(self, block: Block, info: UnitInfo, meta: TokenMeta,
               queries: list[torch.Tensor] | None = None) -> None:
        """A freshly encoded unit joins the memory whole (retention runs after the batch)."""
        self.memory.append(info, unit_layers(block.keys, block.values, block.positions, block.index, meta))
        if queries is not None:
            self.unit_queries = (queries, block.positions, meta.visual)

    def retain(self, new: list[int], now: float, captions: list[Caption], probe: Probe, generate: Generate,
               budget: int | None = None) -> tuple[bool, int]:
        """Run the policy, then the budgets. `probe` / `generate` run text after the stream (the
        session's, passed per call: the retainer keeps no reference back to its session).
        `budget` lowers the token cap for this call (room for the encoder's next unit). Returns
        (whether the memory changed, tokens evicted)."""
        memory = self.memory
        cap = self.max_tokens if budget is None else (budget if self.max_tokens is None else min(budget, self.max_tokens))
        queries = self.unit_queries if new else None
        ctx = RetainContext(
            budget=cap, new_units=new, now=now, n_heads=self.n_heads,
            unit_queries=queries[0] if queries else None, unit_positions=queries[1] if queries else None,
            unit_visual=queries[2] if queries else None,
            probe=probe, generate=generate, rotate=self.rotate,
            add_caption=lambda t0, t1, text: captions.append(Caption(t0, t1, text)),
        )
        before = memory.version
        tokens_before = sum(memory.tokens)
        self.policy.retain(memory, ctx)
        enforce_fifo(memory, cap, self.max_bytes)
        while self.max_bytes is not None and captions and self.nbytes(captions) > self.max_bytes:
            captions.pop(0)
        self.unit_queries = None
        return memory.version != before, max(0, tokens_before - sum(memory.tokens))

    def nbytes(self, captions: list[Caption]) -> int:
        """Bytes of the retained memory: its tokens and the text of the captions."""
        return self.memory.nbytes() + sum(len(c.text.encode()) for c in captions)

    # -- stages 7-8 over the memory ----------------------------------------------------------
    def select(self, retriever: Retriever, retrieve: Retrieve, n_layers: int, at: float | None,
               captions: list[Caption], archived_index: StreamIndex | None,
               ) -> tuple[Selection, dict[int, tuple[float, float]]]:
        """Which units each layer's answer cache holds and their times: the memory's (compact)
        or, with demotion (`archived_index`: the store's blocks), originals brought back
        (`Selection.originals`)."""
        memory = self.memory
        in_memory = {u: i for u, i in memory.units.items() if at is None or i.t_end <= at}
        times = {u: (i.t_start, i.t_end) for u, i in in_memory.items()}
        archived: dict[int, tuple[float, float]] = {}
        rep_of: dict[int, torch.Tensor] = {}
        if archived_index is not None:
            whole = memory.whole_units()
            archived = {u: t for u, t in zip(archived_index.indices, archived_index.times, strict=True)
                        if u not in whole and (at is None or t[1] <= at)}
            rep_of = dict(zip(archived_index.indices, archived_index.rep_keys, strict=True)) if archived else {}
        times.update(archived)
        captions = [cap for cap in captions if at is None or cap.t_end <= at]
        if isinstance(retriever, (AllBlocks, WindowOnly)) or not times:
            units = sorted(in_memory)
            return Selection([units] * n_layers, dict.fromkeys(units, 1.0), captions=captions), times
        always, unmatched = self.keep_memory is True, self.keep_memory == "unmatched"
        pool = sorted(archived) if always else sorted(set(in_memory) | set(archived))
        if pool or captions:  # caption retrievers (rLiVS MMR) run even without blocks
            mem_rep = memory.rep_keys([u for u in pool if u not in archived])
            rep = torch.stack([rep_of[u] if u in archived else mem_rep[u] for u in pool]).to(torch.float32) \
                if pool else None
            sel = retrieve(pool, rep, [times[u] for u in pool])
        else:
            sel = Selection([[] for _ in range(n_layers)])
        if unmatched and not sel.named:  # about no moment in particular: the present
            sel = Selection([[] for _ in range(n_layers)], captions=sel.captions)
        picked = {u for row in sel.per_layer for u in row}
        if always or (unmatched and not picked):
            sel.per_layer = [sorted(set(in_memory) | set(row)) for row in sel.per_layer]
            for u in in_memory:
                sel.layer_share.setdefault(u, 1.0)
        if not sel.captions and not any(sel.per_layer):
            sel.captions = captions
        sel.originals = sorted(picked & set(archived))
        return sel, times

    def answer_layers(self, sel: Selection, at: float | None, originals: dict[int, Block],
                      ) -> tuple[list[LayerMemory], dict[int, UnitInfo]]:
        """Per layer the chosen units' tokens (the memory's, or an original block's in place of
        its unit), in time order, and every unit's info (for the layout)."""
        units = dict(self.memory.units)
        for b in originals.values():
            units[b.index] = UnitInfo(b.index, b.t_start, b.t_end, b.pos_start, b.pos_end, b.n_tokens)
        out: list[LayerMemory] = []
        wanted = {u for row in sel.per_layer for u in row}  # packed units no layer chose stay packed
        for i, (layer, chosen) in enumerate(zip(self.memory.view(before=at, packed=wanted), sel.per_layer,
                                                strict=True)):
            chosen_set = set(chosen)
            present = set(layer.unit.unique().tolist()) if layer.n else set()
            layer = drop_units(layer, (present - chosen_set) | (chosen_set & set(originals)))
            extras = [unit_layers(b.keys[i:i + 1], b.values[i:i + 1], b.positions, u, TokenMeta.text(b.n_tokens))[0]
                      for u in sorted(chosen_set & set(originals)) for b in (originals[u],)]
            parts = ([layer] if layer.n else []) + extras
            if extras:  # one concatenation: one at a time would copy the layer once per original
                layer = cat_layers(parts)
            out.append(sort_units(layer))
        return out, units
