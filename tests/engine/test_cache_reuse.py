"""Cache layers append in place (`engine/window.GrowingLayer`): a forward copies only its new
tokens instead of reallocating the layer's whole cache, and the results equal `DynamicLayer`'s."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

from streamvqa.engine.window import RESERVE_TOKENS, GrowingLayer, HotWindow, new_cache
from tests.engine.conftest import get_adapter


def _kv(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 2, n, 8, generator=g), torch.randn(1, 2, n, 8, generator=g)


def test_appends_reuse_one_buffer_and_equal_concatenation() -> None:
    ours, ref = GrowingLayer(), DynamicLayer()
    k, v = _kv(40, 0)
    ours.update(k, v)
    ref.update(k, v)
    storage = ours.keys.untyped_storage().data_ptr()
    for step in range(1, 60):  # one token at a time, as generation does
        k, v = _kv(1, step)
        ko, vo = ours.update(k, v)
        kr, vr = ref.update(k, v)
        assert torch.equal(ko, kr) and torch.equal(vo, vr)
        assert ko.untyped_storage().data_ptr() == storage  # no reallocation within the reserve
    assert ours.get_seq_length() == ref.get_seq_length() == 99


def test_crop_then_update_overwrites_the_cropped_tail() -> None:
    ours, ref = GrowingLayer(), DynamicLayer()
    for layer in (ours, ref):
        layer.update(*_kv(30, 1))
        layer.update(*_kv(5, 2))  # a question ...
        layer.crop(-5)  # ... that leaves no trace
        layer.update(*_kv(7, 3))
    assert torch.equal(ours.keys, ref.keys) and torch.equal(ours.values, ref.values)


def test_growing_past_the_reserve_keeps_the_contents() -> None:
    ours, ref = GrowingLayer(reserve=4), DynamicLayer()
    for step in range(20):
        k, v = _kv(3, 10 + step)
        ours.update(k, v)
        ref.update(k, v)
    assert torch.equal(ours.keys, ref.keys) and torch.equal(ours.values, ref.values)


def test_window_cache_layers_grow_in_place_and_count_their_reserve() -> None:
    adapter = get_adapter("tiny:smolvlm")
    window = HotWindow(adapter, None)
    assert all(isinstance(layer, GrowingLayer) for layer in window.cache.layers)
    cache = new_cache(adapter, [torch.zeros(adapter.n_kv_heads, 3, adapter.head_dim)] * adapter.n_layers,
                      [torch.zeros(adapter.n_kv_heads, 3, adapter.head_dim)] * adapter.n_layers)
    window.cache = cache
    per_token = 2 * adapter.n_kv_heads * adapter.head_dim * 4 * adapter.n_layers
    assert window.nbytes == per_token * (3 + RESERVE_TOKENS)  # spare room is memory too
