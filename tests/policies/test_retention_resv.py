"""ReSV (our reading of the abstract): temporal/spatial neighbours and cluster merges, by hand."""

import torch

from streamvqa.policies.memory import RetainContext
from streamvqa.policies.resv import ReSV, ReSVOptions, merge_targets
from tests.policies.helpers_memory import memory_of


def test_each_new_token_finds_its_temporal_or_spatial_neighbour():
    keys = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    patch = torch.tensor([0, 0, 1])
    new = torch.tensor([False, True, True])
    target, best = merge_targets(keys, patch, new, temporal=True, spatial=True)
    assert target.tolist() == [-1, 0, 1]  # new patch 0 -> old patch 0; new patch 1 -> its left neighbour
    assert torch.allclose(best[1:], torch.tensor([1.0, 0.0]))


def test_redundant_tokens_merge_into_weighted_clusters():
    memory = memory_of([
        {"keys": [[1.0, 0.0], [0.0, 1.0]], "values": [[2.0, 0.0], [0.0, 2.0]]},
        {"keys": [[1.0, 0.02], [1.0, 1.0]], "values": [[4.0, 0.0], [0.0, 4.0]]},
    ])
    ReSV(ReSVOptions(threshold=0.9)).retain(memory, RetainContext(budget=None, new_units=[1], now=1.0, n_heads=1))
    layer = memory.layers[0]
    assert layer.n == 3  # the new patch 0 joined the old one; the new patch 1 (cosine .71) stays
    assert layer.weight[0].tolist() == [2.0, 1.0, 1.0]
    assert torch.allclose(layer.keys[0, 0], torch.tensor([1.0, 0.01]))
    assert torch.allclose(layer.values[0, 0], torch.tensor([3.0, 0.0]))
