"""StreamMem: proxy attention scores and per-frame prototypes, by hand."""

import math

import torch

from streamvqa.policies.memory import RetainContext, attention
from streamvqa.policies.streammem import StreamMem, StreamMemOptions, prototypes
from tests.policies.helpers_memory import memory_of

IDENTITY = lambda k, p: k  # noqa: E731  (RoPE at position 0 is the identity; scores by content alone)


def test_attention_scores_are_the_softmax_of_scaled_logits():
    memory = memory_of([{"keys": [[1.0, 0.0], [0.0, 1.0]], "values": [[0.0, 0.0], [0.0, 0.0]]}])
    s = attention(torch.tensor([[[1.0, 0.0]]]), torch.zeros(1, 1, dtype=torch.long), memory.layers[0], IDENTITY)
    a = math.exp(1 / math.sqrt(2))
    assert torch.allclose(s, torch.tensor([[a / (a + 1), 1 / (a + 1)]]))


def test_a_prototype_is_the_score_weighted_mean_of_its_frame():
    memory = memory_of([{"keys": [[1.0, 0.0], [0.0, 1.0]], "values": [[2.0, 0.0], [0.0, 2.0]]}])
    p = prototypes(memory.layers[0], torch.tensor([[3.0, 1.0]]), frames=[0])
    assert torch.allclose(p.keys[0, 0], torch.tensor([0.75, 0.25]))
    assert torch.allclose(p.values[0, 0], torch.tensor([1.5, 0.5]))
    assert p.weight.tolist() == [[2.0]] and p.positions[0, 0].tolist() == [0]


def test_over_budget_keeps_top_by_proxy_attention_plus_one_prototype_per_new_frame():
    memory = memory_of([
        {"keys": [[1.0, 0.0], [0.0, 1.0]], "values": [[1.0, 0.0], [1.0, 0.0]]},
        {"keys": [[0.9, 0.1], [-1.0, 0.0]], "values": [[1.0, 0.0], [1.0, 0.0]]},
    ])

    def probe(_text):
        return [torch.tensor([[[4.0, 0.0]]])], torch.zeros(1, 1, dtype=torch.long)

    StreamMem(StreamMemOptions()).retain(memory, RetainContext(budget=3, new_units=[1], now=1.0, n_heads=1,
                                                               probe=probe, rotate=IDENTITY))
    layer = memory.layers[0]
    assert layer.n == 3
    assert layer.weight[0].tolist() == [1.0, 1.0, 2.0]  # two best tokens, then frame 1's prototype
    assert layer.keys[0, 0].tolist() == [1.0, 0.0] and torch.allclose(layer.keys[0, 1], torch.tensor([0.9, 0.1]))
