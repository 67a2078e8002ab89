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
from transformers.cache_utils import DynamicLayer

from streamvqa.engine.batch_forward import ForwardRequest, batchable, forward_batch
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
        self.cache = new_cache(adapter, [], [])
        self.next = 0  # position the next unit starts at, in window layout
        self.tokens = 0
        self.limit: int | None = None  # tokens the cache may hold, spare room included (a device byte budget)

    def set_limit(self, limit: int | None) -> None:
        """Cap the cache's room at `limit` tokens (a device byte budget); empties the window."""
        assert self.sink is not None
        self.limit = limit
        self.set_sink(self.sink)

    def set_sink(self, sink: Sink) -> None:
        self.sink = sink
        self.next = sink.end
        self.cache = new_cache(self.adapter, *place(self.adapter, sink, [[]] * self.adapter.n_layers, None), self.limit)

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

    def advance(self, block: Block) -> None:
        """Account for a unit the last forward appended on top of a loaded memory (encode on the
        memory): it stays in the cache until the next `load_memory`, no block is kept."""
        self.next += block.extent
        self.tokens += block.n_tokens

    def replace(self, blocks: list[Block]) -> None:
        """Hold exactly `blocks` (oldest first), laid out contiguously after the sink: a window
        rebuilt from stored blocks (`engine/replica.py`)."""
        self.blocks = deque(blocks)
        self.tokens = sum(b.n_tokens for b in blocks)
        self._rebuild()

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
        self.cache = new_cache(self.adapter, keys, values, self.limit)
        self.blocks.clear()
        self.tokens = layers[0].n if layers else 0
        self.next = end if layout == "contiguous" else next_original

    def _rebuild(self) -> None:
        assert self.sink is not None
        blocks = list(self.blocks)
        positions, self.next = contiguous(blocks, self.sink.end)
        keys, values = place(self.adapter, self.sink, [blocks] * self.adapter.n_layers, positions_per_layer=None,
                             positions=positions)
        self.cache = new_cache(self.adapter, keys, values, self.limit)

    @property
    def block_ids(self) -> list[int]:
        return [b.index for b in self.blocks]

    @property
    def nbytes(self) -> int:
        """Bytes the window's cache holds, spare room of its layers included."""
        return cache_bytes(self.cache)


# tokens of spare room a cache layer keeps past its length: a unit, or a question and its answer,
# is appended in place without reallocating the layer
RESERVE_TOKENS = 256


class GrowingLayer(DynamicLayer):
    """A `DynamicLayer` that appends into spare capacity instead of concatenating.

    DynamicLayer's `update` is ``torch.cat([keys, new])``: every forward (each encoded unit, each
    question, each generated token) reallocates and copies the layer's whole cache, so a stream
    frees and allocates its entire window per frame and an answer its whole cache per token; the
    allocator keeps much of that churn (docs/benchmarks.md, "Soak"). Here the layer owns buffers
    with room for `RESERVE_TOKENS` (or 1/16 of its length) more tokens; `update` copies only the
    new tokens and `keys`/`values` are views of the filled part. Growing copies once into a
    bigger buffer; `crop` only shortens the view (the next update overwrites the cropped tail).
    """

    def __init__(self, reserve: int = RESERVE_TOKENS, limit: int | None = None) -> None:
        super().__init__()
        self.reserve = reserve
        self.limit = limit  # tokens the buffers never exceed unless one update needs more (a byte budget)
        self._kbuf: torch.Tensor | None = None
        self._vbuf: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs,
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n, m = self.get_seq_length(), key_states.shape[-2]
        buf = self._kbuf
        if buf is None or n + m > buf.shape[-2] or buf.shape[:-2] != key_states.shape[:-2] \
                or buf.dtype != key_states.dtype or buf.device != key_states.device:
            self._grow(n, n + m, key_states, value_states)
        self._kbuf[..., n:n + m, :].copy_(key_states)
        self._vbuf[..., n:n + m, :].copy_(value_states)
        self.keys = self._kbuf[..., :n + m, :]
        self.values = self._vbuf[..., :n + m, :]
        return self.keys, self.values

    def _grow(self, n: int, need: int, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        cap = need + max(self.reserve, need // 16)
        if self.limit is not None:
            cap = max(need, min(cap, self.limit))
        kbuf = key_states.new_empty((*key_states.shape[:-2], cap, key_states.shape[-1]))
        vbuf = value_states.new_empty((*value_states.shape[:-2], cap, value_states.shape[-1]))
        if n:
            kbuf[..., :n, :].copy_(self.keys)
            vbuf[..., :n, :].copy_(self.values)
        self._kbuf, self._vbuf = kbuf, vbuf

    def reset(self) -> None:
        self._kbuf = self._vbuf = None
        super().reset()

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        self._kbuf = self._vbuf = None  # the views were replaced by new tensors: next update copies

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        self._kbuf = self._vbuf = None

    @property
    def capacity(self) -> int:
        """Tokens the layer's buffers hold room for (its length plus the spare room)."""
        if self._kbuf is None:
            return 0 if self.keys is None else int(self.keys.shape[-2])
        return int(self._kbuf.shape[-2])

    @property
    def capacity_bytes(self) -> int:
        """Bytes the layer's buffers hold (its length plus the spare room)."""
        if self._kbuf is None:
            return 0 if self.keys is None else self.keys.nbytes + self.values.nbytes
        return self._kbuf.nbytes + self._vbuf.nbytes


def cache_bytes(cache: DynamicCache) -> int:
    """Bytes a cache's layers hold, spare room of `GrowingLayer`s included."""
    return sum(
        layer.capacity_bytes if isinstance(layer, GrowingLayer) else layer.keys.nbytes + layer.values.nbytes
        for layer in cache.layers if getattr(layer, "keys", None) is not None
    )


def new_cache(adapter: ModelAdapter, keys: list[torch.Tensor], values: list[torch.Tensor],
              limit: int | None = None) -> DynamicCache:
    """A DynamicCache holding per-layer keys/values [kv_heads, n, d] (post-RoPE), whose plain
    layers append in place (`GrowingLayer`, spare room up to `limit` tokens); sliding-window
    layers of a model stay as they are."""
    cache = DynamicCache(config=adapter.text_config)
    cache.layers = [GrowingLayer(limit=limit) if type(layer) is DynamicLayer else layer for layer in cache.layers]
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
    causal mask cannot serve them, so such a cache runs through the ragged attention function
    (`batch_forward`), which masks each layer by its own length: one forward, exact. Caches it
    cannot append to (sliding layers) go one token at a time (a single query needs no mask)."""
    lengths = {layer.keys.shape[-2] for layer in cache.layers if getattr(layer, "keys", None) is not None}
    if len(lengths) <= 1 or embeds.shape[1] == 1:
        return adapter.forward(embeds, positions, cache, logits=logits)
    if batchable(cache):
        return forward_batch(adapter, [ForwardRequest(embeds, positions, cache, logits)], ragged=True)[0]
    out = None
    for i in range(embeds.shape[1]):
        out = adapter.forward(embeds[:, i:i + 1], positions[:, i:i + 1], cache, logits=logits)
    return out
