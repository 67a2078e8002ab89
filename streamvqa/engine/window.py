"""Stage 3: the encoder's hot window (ReKV-style sliding-window encoding).

A new unit attends to the sink tokens (the prompt prefix) and the most recent `n_local` tokens.
The window lives in a transformers `DynamicCache` whose keys are rotated at *contiguous*
positions: sinks first, then the window's units back to back. While nothing has left the window
these are exactly the stream's original positions, so with `n_local=None` encoding is plain
chunked prefill (the exact mode). When units leave, the cache is rebuilt from the position-free
keys, so positions stay bounded however long the stream runs.
"""

from __future__ import annotations

from collections import deque

import torch
from transformers import DynamicCache

from streamvqa.engine.layout import contiguous
from streamvqa.models.base import ModelAdapter
from streamvqa.store.block import Block


class Sink:
    """The prefix tokens every cache starts with, already rotated at their (fixed) positions."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor, end: int) -> None:
        self.keys = keys  # [layers, kv_heads, n, d], pre-RoPE like every block
        self.values = values
        self.positions = positions
        self.end = end  # next position after the sink

    @property
    def n_tokens(self) -> int:
        return int(self.keys.shape[2])


class HotWindow:
    def __init__(self, adapter: ModelAdapter, n_local: int | None) -> None:
        self.adapter = adapter
        self.n_local = n_local
        self.sink: Sink | None = None
        self.blocks: deque[Block] = deque()
        self.cache = DynamicCache(config=adapter.text_config)
        self.next = 0  # position the next unit starts at, in window layout
        self.tokens = 0

    def set_sink(self, sink: Sink) -> None:
        self.sink = sink
        self.next = sink.end
        self.cache = new_cache(self.adapter, *place(self.adapter, sink, [[]] * self.adapter.n_layers, None))

    def push(self, block: Block) -> bool:
        """Account for a unit the last forward appended to the cache; trim if over budget.
        Returns True when the cache was rebuilt (units left the window)."""
        self.blocks.append(block)
        self.next += block.extent
        self.tokens += block.n_tokens
        if self.n_local is None or self.tokens <= self.n_local:
            return False
        while self.tokens > self.n_local and len(self.blocks) > 1:
            self.tokens -= self.blocks.popleft().n_tokens
        self._rebuild()
        return True

    def make_room(self, n_new: int, cap: int) -> bool:
        """Before encoding `n_new` tokens: drop oldest units so the window plus the new unit
        stays within `cap` tokens (a byte budget: the cache never holds more). True if rebuilt."""
        if self.tokens + n_new <= cap or not self.blocks:
            return False
        while self.blocks and self.tokens + n_new > cap:
            self.tokens -= self.blocks.popleft().n_tokens
        self._rebuild()
        return True

    def load_memory(self, layers: list, units: dict, layout: str, next_original: int) -> None:
        """Encode on the retained memory (InfiniPot-V, StreamMem, StreamingVLM): the cache is
        the sink plus every retained token, at its original or contiguous position."""
        assert self.sink is not None
        keys, values, end = place_memory(self.adapter, self.sink, layers, units, layout)
        self.cache = new_cache(self.adapter, keys, values)
        self.blocks.clear()
        self.tokens = layers[0].n if layers else 0
        self.next = end if layout == "contiguous" else next_original

    def _rebuild(self) -> None:
        assert self.sink is not None
        blocks = list(self.blocks)
        positions, self.next = contiguous(blocks, self.sink.end)
        keys, values = place(self.adapter, self.sink, [blocks] * self.adapter.n_layers, positions_per_layer=None,
                             positions=positions)
        self.cache = new_cache(self.adapter, keys, values)

    @property
    def block_ids(self) -> list[int]:
        return [b.index for b in self.blocks]

    @property
    def nbytes(self) -> int:
        return sum(
            layer.keys.element_size() * layer.keys.nelement() * 2 for layer in self.cache.layers
            if getattr(layer, "keys", None) is not None
        )


def new_cache(adapter: ModelAdapter, keys: list[torch.Tensor], values: list[torch.Tensor]) -> DynamicCache:
    """A DynamicCache holding per-layer keys/values [kv_heads, n, d] (post-RoPE)."""
    cache = DynamicCache(config=adapter.text_config)
    for i, (k, v) in enumerate(zip(keys, values, strict=True)):
        cache.update(k.unsqueeze(0), v.unsqueeze(0), i)
    return cache


def place(
    adapter: ModelAdapter,
    sink: Sink,
    blocks_per_layer: list[list[Block]],
    positions_per_layer: list[list[torch.Tensor]] | None,
    positions: list[torch.Tensor] | None = None,
    shift: int = 0,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer: the sink, then the layer's blocks, rotated at their given positions (+ shift)."""
    dev, dt = adapter.device, adapter.dtype
    sink_keys = adapter.rotate(sink.keys.to(dev, dt), sink.positions + shift)
    keys, values = [], []
    for layer, blocks in enumerate(blocks_per_layer):
        k_parts, v_parts = [sink_keys[layer]], [sink.values[layer].to(dev, dt)]
        if blocks:
            pos = positions if positions is not None else positions_per_layer[layer]
            k_pre = torch.cat([b.keys[layer] for b in blocks], dim=1).to(dev, dt)
            k_parts.append(adapter.rotate(k_pre, torch.cat(pos, dim=1) + shift))
            v_parts.append(torch.cat([b.values[layer] for b in blocks], dim=1).to(dev, dt))
        keys.append(torch.cat(k_parts, dim=1))
        values.append(torch.cat(v_parts, dim=1))
    return keys, values


def rotate_heads(adapter: ModelAdapter, keys: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """RoPE on pre-RoPE keys [H, n, d] at per-head positions [H, P, n]."""
    if keys.shape[1] == 0:
        return keys
    if bool((positions == positions[:1]).all()):
        return adapter.rotate(keys, positions[0])
    return torch.cat([adapter.rotate(keys[h:h + 1], positions[h]) for h in range(keys.shape[0])])


def contiguous_tokens(mem, units: dict, start: int) -> tuple[torch.Tensor, int]:
    """Token-level contiguous layout (StreamingVLM's shrink mode): per head, runs of retained
    tokens are laid back to back from `start`. A unit held whole is one run of its original
    extent (so nothing moves while nothing is missing); otherwise a run is a unit's visual grid
    (M-RoPE structure kept) or a stretch of consecutive text positions; gaps close."""
    H, P, n = mem.positions.shape
    if n == 0:
        return mem.positions, start
    out = torch.empty_like(mem.positions)
    ends = []
    order = sorted(units)
    n_tok = torch.zeros(max(order) + 1, dtype=torch.long)
    p0 = torch.zeros_like(n_tok)
    ext = torch.zeros_like(n_tok)
    for u in order:
        n_tok[u], p0[u], ext[u] = units[u].n_tokens, units[u].pos_start, units[u].pos_end - units[u].pos_start
    for h in range(H):
        unit, pos = mem.unit[h], mem.positions[h]
        counts = torch.bincount(unit, minlength=len(n_tok))
        whole = (counts[unit] == n_tok[unit]) & (mem.weight[h] == 1)
        first = pos[0]
        change = torch.ones(n, dtype=torch.bool)
        same_unit = unit[1:] == unit[:-1]
        jump = (first[1:] != first[:-1] + 1) & ((P == 1) | ~mem.visual[h][1:])
        change[1:] = ~same_unit | (~whole[1:] & ((mem.visual[h][1:] != mem.visual[h][:-1]) | jump))
        run = change.long().cumsum(0) - 1
        R = int(run[-1]) + 1
        big = 1 << 60
        lo = torch.full((R,), big).scatter_reduce(0, run, pos.min(0).values, "amin")
        hi = torch.full((R,), -big).scatter_reduce(0, run, pos.max(0).values, "amax")
        width = hi - lo + 1
        run_whole = torch.zeros(R, dtype=torch.bool).scatter_reduce(0, run, whole, "amax")
        run_unit = torch.zeros(R, dtype=torch.long).scatter_reduce(0, run, unit, "amax")
        lo = torch.where(run_whole, p0[run_unit], lo)
        width = torch.where(run_whole, ext[run_unit], width)
        offset = start + torch.cat([torch.zeros(1, dtype=torch.long), width.cumsum(0)[:-1]])
        out[h] = pos - lo[run] + offset[run]
        ends.append(start + int(width.sum()))
    return out, max(ends)


def place_memory(adapter: ModelAdapter, sink: Sink, layers: list, units: dict, layout: str,
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor], int]:
    """Per layer: the sink, then the retained tokens rotated at their original or contiguous
    positions (per head). Returns keys, values and the next free position."""
    dev, dt = adapter.device, adapter.dtype
    sink_keys = adapter.rotate(sink.keys.to(dev, dt), sink.positions)
    keys, values, end = [], [], sink.end
    for i, mem in enumerate(layers):
        if layout == "contiguous":
            pos, e = contiguous_tokens(mem, units, sink.end)
        else:
            pos = mem.positions
            e = int(pos.max()) + 1 if mem.n else sink.end
        end = max(end, e)
        k = rotate_heads(adapter, mem.keys.to(dev, dt), pos)
        keys.append(torch.cat([sink_keys[i], k], dim=1))
        values.append(torch.cat([sink.values[i].to(dev, dt), mem.values.to(dev, dt)], dim=1))
    return keys, values, end


def prefill(adapter: ModelAdapter, embeds: torch.Tensor, positions: torch.Tensor, cache: DynamicCache,
            logits: str = "last") -> torch.Tensor:
    """Forward `embeds` into `cache`. Layer-adaptive memories give layers different lengths; one
    causal mask cannot serve them, so such a cache is prefilled one token at a time (a single
    query needs no mask, and every layer attends to all of its own keys): exact, only slower."""
    lengths = {layer.keys.shape[-2] for layer in cache.layers if getattr(layer, "keys", None) is not None}
    if len(lengths) <= 1 or embeds.shape[1] == 1:
        return adapter.forward(embeds, positions, cache, logits=logits)
    out = None
    for i in range(embeds.shape[1]):
        out = adapter.forward(embeds[:, i:i + 1], positions[:, i:i + 1], cache, logits=logits)
    return out
