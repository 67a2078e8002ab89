"""Retained tokens back in a cache: contiguous re-layout (whole units unchanged, gaps closed),
per-head rotation, and ragged layers prefilled in one forward exactly as one token at a time."""

import torch

from streamvqa.engine.window import contiguous_tokens, new_cache, prefill, rotate_heads
from streamvqa.policies.memory import TokenMemory, TokenMeta, UnitInfo, unit_layers
from tests.engine.conftest import get_adapter


def _memory(visual: list[bool]) -> TokenMemory:
    mem = TokenMemory()
    n = len(visual)
    for u in range(2):
        pos = torch.arange(10 * u + 5, 10 * u + 5 + n).view(1, n)
        meta = TokenMeta(torch.full((n,), u), torch.arange(n), torch.tensor(visual))
        mem.append(UnitInfo(u, float(u), float(u), 10 * u + 5, 10 * u + 5 + n, n),
                   unit_layers(torch.zeros(1, 1, n, 2), torch.zeros(1, 1, n, 2), pos, u, meta))
    return mem


def test_whole_units_keep_their_extent_and_partial_ones_close_their_gaps():
    mem = _memory([False, True, True, False])
    pos, end = contiguous_tokens(mem.layers[0], mem.units, start=5)
    assert pos[0, 0].tolist() == [5, 6, 7, 8, 9, 10, 11, 12] and end == 13  # unit 1 moved next to unit 0
    mem.keep([torch.tensor([[0, 3, 4, 5, 6, 7]])])  # unit 0 loses its visual tokens
    pos, end = contiguous_tokens(mem.layers[0], mem.units, start=5)
    assert pos[0, 0].tolist() == [5, 6, 7, 8, 9, 10] and end == 11


def test_per_head_rotation_equals_rotating_each_head_alone():
    adapter = get_adapter("tiny:smolvlm")
    torch.manual_seed(0)
    k = torch.randn(2, 3, adapter.head_dim)
    positions = torch.tensor([[[1, 2, 3]], [[7, 9, 11]]])
    out = rotate_heads(adapter, k, positions)
    for h in range(2):
        assert torch.allclose(out[h], adapter.rotate(k[h:h + 1], positions[h])[0])


def _cache_and_question(adapter, seed: int, n: int):
    """Random per-layer keys/values of 6 tokens and n question embeddings placed after them."""
    torch.manual_seed(seed)
    L, H, d = adapter.n_layers, adapter.n_kv_heads, adapter.head_dim
    keys = [torch.randn(H, 6, d) for _ in range(L)]
    values = [torch.randn(H, 6, d) for _ in range(L)]
    emb = torch.randn(1, n, adapter.text_config.hidden_size)
    return keys, values, emb, torch.arange(6, 6 + n).view(1, n)


def _ragged_cache(adapter, keys, values, short: int):
    cache = new_cache(adapter, keys, values)
    cache.layers[-1].keys = cache.layers[-1].keys[:, :, :short]  # the last layer holds fewer tokens
    cache.layers[-1].values = cache.layers[-1].values[:, :, :short]
    return cache


def test_ragged_prefill_is_one_forward_equal_to_one_token_at_a_time():
    adapter = get_adapter("tiny:smolvlm")
    keys, values, emb, pos = _cache_and_question(adapter, 1, 4)
    reference = _ragged_cache(adapter, keys, values, 3)
    for i in range(4):  # the one-token path: a single query needs no mask
        want = adapter.forward(emb[:, i:i + 1], pos[:, i:i + 1], reference, logits="last")
    cache = _ragged_cache(adapter, keys, values, 3)
    calls = []
    hook = adapter.backbone.register_forward_hook(lambda *a: calls.append(1))
    try:
        got = prefill(adapter, emb, pos, cache)
    finally:
        hook.remove()
    assert len(calls) == 1  # one decoder forward for the whole question
    assert (got - want).abs().max() < 1e-4
    for a, b in zip(cache.layers, reference.layers, strict=True):
        assert a.keys.shape == b.keys.shape and (a.keys - b.keys).abs().max() < 1e-4


def test_token_by_token_prefill_equals_one_shot_and_serves_ragged_layers():
    adapter = get_adapter("tiny:smolvlm")
    keys, values, emb, pos = _cache_and_question(adapter, 0, 3)
    one_shot = adapter.forward(emb, pos, new_cache(adapter, keys, values), logits="last")
    ragged = _ragged_cache(adapter, keys, values, 4)
    out = prefill(adapter, emb, pos, ragged)
    assert [layer.keys.shape[2] for layer in ragged.layers] == [9] * (adapter.n_layers - 1) + [7]
    assert out.shape == one_shot.shape and not torch.allclose(out, one_shot)  # layer 1 saw fewer keys
    equal = new_cache(adapter, keys, values)
    for i in range(3):  # the one-token path itself is exact
        last = adapter.forward(emb[:, i:i + 1], pos[:, i:i + 1], equal, logits="last")
    assert (last - one_shot).abs().max() < 1e-4


def test_unit_mean_keys_equal_a_mask_per_unit():
    torch.manual_seed(2)
    mem = TokenMemory()
    for u, n in enumerate([3, 5, 2, 4]):
        pos = torch.arange(10 * u, 10 * u + n).view(1, n)
        mem.append(UnitInfo(u, float(u), float(u), 10 * u, 10 * u + n, n),
                   unit_layers(torch.randn(2, 2, n, 3), torch.randn(2, 2, n, 3), pos, u, TokenMeta.text(n)))
    mem.keep([torch.tensor([[0, 2, 3, 5, 9, 12], [1, 4, 8, 9, 10, 13]])] * 2)  # heads keep different tokens
    reps = mem.rep_keys([3, 0, 1])
    assert list(reps) == [3, 0, 1]
    for u, rep in reps.items():
        for i, layer in enumerate(mem.layers):
            for h in range(2):
                want = layer.keys[h][layer.unit[h] == u].mean(0)
                assert torch.allclose(rep[i, h], want)
