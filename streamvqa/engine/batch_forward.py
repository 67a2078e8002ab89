"""One decoder forward over the units of many streams (ragged, exact per stream).

The requests' tokens run back to back as one sequence of batch size 1, so every linear layer
(projections, MLP, norms) sees one big matrix instead of B small ones. Attention is the only
place streams must not meet: each stream attends to its own cache (sink + window, or retained
memory) and causally to its own new tokens, exactly as when it runs alone. That is done by
a registered attention function (`ragged`) that slices the queries per stream and calls the
model's own attention implementation once per stream with that stream's keys and values; the
streams' caches are appended in place by `RaggedCache.update`, as each stream's forward would.
Positions are each token's own (1-D or M-RoPE rows), so rotary embeddings need nothing special.
DeepStack features (Qwen3-VL) are per token and concatenate like the embeddings do.

No stream's tensors ever meet another's inside a softmax: a stream's blocks equal (within fp32
round-off of the larger matrix products) what it would have encoded alone
(tests/engine/test_batch_forward.py).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.cache_utils import Cache, DynamicLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from streamvqa.engine.capture import Capture, capture

RAGGED = "streamvqa_ragged"
_active = threading.local()  # the batch whose forward this thread is running


@dataclass
class ForwardRequest:
    """One stream's forward: what `ModelAdapter.forward` was called with, plus the captures
    open in the caller (filled with this request's slice of the batch's projections)."""

    embeds: torch.Tensor  # [1, n, width]
    positions: torch.Tensor  # [rows, n]
    cache: object  # the stream's DynamicCache
    logits: str = "all"
    captures: list[Capture] = field(default_factory=list)

    @property
    def n(self) -> int:
        return int(self.embeds.shape[1])


class RaggedCache(Cache):
    """Hands each stream's slice of the new keys/values to that stream's own cache; the
    attention function reads the updated per-stream tensors back from here."""

    def __init__(self, caches: list, spans: list[tuple[int, int]]) -> None:
        self.caches = caches
        self.spans = spans
        self.layers = []  # nothing of its own: every tensor lives in the streams' caches
        self.kv: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        self.kv[layer_idx] = [
            cache.update(key_states[:, :, a:b], value_states[:, :, a:b], layer_idx)
            for cache, (a, b) in zip(self.caches, self.spans, strict=True)
        ]
        return key_states, value_states

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0  # positions are always given explicitly

    @property
    def is_compileable(self) -> bool:
        return False


def ragged(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """Attention per stream: queries [1, Hq, N, d] of all streams, each against its own keys."""
    batch = _active.batch
    inner = ALL_ATTENTION_FUNCTIONS[batch.inner]
    outs = []
    for (a, b), (k, v) in zip(batch.cache.spans, batch.cache.kv[module.layer_idx], strict=True):
        n, total = b - a, k.shape[-2]
        out, _ = inner(module, query[:, :, a:b], k, v, batch.mask(n, total, query.device), dropout=dropout,
                       scaling=scaling, **kwargs)
        outs.append(out)
    return torch.cat(outs, dim=1), None


AttentionInterface.register(RAGGED, ragged)


@dataclass
class _Batch:
    cache: RaggedCache
    inner: str
    masks: dict = field(default_factory=dict)

    def mask(self, n: int, total: int, device) -> torch.Tensor:
        """Causal with the stream's past: new token j sees every cached key and new tokens
        <= j (made once per shape per forward, not per layer)."""
        m = self.masks.get((n, total))
        if m is None:
            m = self.masks[(n, total)] = torch.ones(n, total, dtype=torch.bool, device=device).tril(total - n)[None, None]
        return m


def batchable(cache) -> bool:
    """Only plain growing layers can be appended per stream (sliding-window layers cannot)."""
    return all(isinstance(layer, DynamicLayer) for layer in cache.layers)


def forward_batch(adapter, requests: list[ForwardRequest], ragged: bool = False) -> list[torch.Tensor]:
    """Run every request's tokens through the decoder in one forward; returns per request what
    `adapter.forward` would have (hidden states, all logits or the last one) and fills its
    captures. `ragged`: through the per-stream attention even for one request (a cache whose
    layers hold different lengths: each layer is masked by its own). Call with the model lock held."""
    want_q = any(c.wants[0] for r in requests for c in r.captures)
    want_kv = any(c.wants[1] for r in requests for c in r.captures)
    if len(requests) == 1 and not ragged:  # nothing to share: the stock path, bit for bit
        r = requests[0]
        with capture(adapter.attention_layers(), q=want_q, kv=want_kv) if r.captures else _nothing() as cap:
            out = adapter.forward(r.embeds, r.positions, r.cache, logits=r.logits)
        _fill(r, cap, 0, r.n)
        return [out]
    width = max(int(r.embeds.shape[-1]) for r in requests)
    # a decode step of a DeepStack family is narrower (no DeepStack columns): zero columns
    # mean "no feature" to `decoder_inputs`, so padding changes nothing
    embeds = torch.cat([F.pad(r.embeds, (0, width - r.embeds.shape[-1])) for r in requests], dim=1)
    positions = torch.cat([r.positions.to(adapter.device) for r in requests], dim=1)
    spans, a = [], 0
    for r in requests:
        spans.append((a, a + r.n))
        a += r.n
    cache = RaggedCache([r.cache for r in requests], spans)
    config = adapter.backbone.config
    # transformers selects the attention function by this config field (no public setter)
    inner = config._attn_implementation or "sdpa"  # noqa: SLF001
    if inner not in ALL_ATTENTION_FUNCTIONS:
        inner = "sdpa"
    x, extra = adapter.decoder_inputs(embeds)
    _active.batch = _Batch(cache, inner)
    config._attn_implementation = RAGGED  # noqa: SLF001
    try:
        with capture(adapter.attention_layers(), q=want_q, kv=want_kv) if want_q or want_kv else _nothing() as cap:
            h = adapter.backbone(inputs_embeds=x, position_ids=adapter.position_ids(positions),
                                 past_key_values=cache, use_cache=True, **extra).last_hidden_state
    finally:
        config._attn_implementation = inner  # noqa: SLF001
        _active.batch = None
    outs = []
    for r, (a, b) in zip(requests, spans, strict=True):
        _fill(r, cap, a, b)
        hr = h[:, a:b]
        if r.logits == "last":
            outs.append(adapter.lm_head(hr[:, -1:]))
        elif r.logits == "none":
            outs.append(hr)
        else:
            outs.append(adapter.lm_head(hr))
    return outs


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc) -> None:
        return None


def _fill(r: ForwardRequest, cap: Capture | None, a: int, b: int) -> None:
    """This request's token slice of the captured projections, into each of its captures. Keys
    and values are views (every reader stacks them into a block: a copy); queries are copied,
    as policies may keep them for a while and must not keep the whole batch's tensor alive."""
    if cap is None:
        return
    for c in r.captures:
        q, kv = c.wants
        for want, src, dst, copy in ((q, cap.q, c.q, True), (kv, cap.k, c.k, False), (kv, cap.v, c.v, False)):
            if want:
                for i, t in enumerate(src):
                    dst[i] = t[:, a:b].clone() if copy else t[:, a:b]
