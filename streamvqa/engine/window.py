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
