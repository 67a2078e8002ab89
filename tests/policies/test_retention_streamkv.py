"""StreamKV: segmentation rules, guidance scores and the layer-adaptive allocation, by hand."""

import torch

from streamvqa.policies.memory import RetainContext
from streamvqa.policies.streamkv import (
    StreamKV,
    StreamKVOptions,
    boundary,
    frame_scores,
    layer_budgets,
    most_similar_pair,
)
from tests.policies.helpers_memory import memory_of


def test_segment_boundaries_follow_min_size_and_theta():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert not boundary(a, b, size=3, theta=0.99, min_size=4)  # too short to close
    assert boundary(a, b, size=4, theta=0.99, min_size=4)  # cosine 0 <= theta
    assert not boundary(a, a * 2, size=10, theta=0.99, min_size=4)  # cosine 1 > theta
    assert most_similar_pair([torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([0.1, 1.0])]) == 1


def test_frame_score_is_the_guidance_query_dot_the_gqa_expanded_mean_key():
    guide = torch.tensor([1.0, 0.0, 0.0, 2.0])  # 2 query heads x d=2, one KV head
    keys = torch.tensor([[[1.0, 1.0]], [[2.0, 0.0]]])  # [T=2, H=1, d=2]
    assert torch.equal(frame_scores(guide, keys), torch.tensor([3.0, 2.0]))


def test_layer_budgets_hand_case():
    scores = torch.tensor([[10.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0]])
    # z-softmax cumulative mass: layer 0 [.711 .807 .904 1], layer 1 [.565 .825 .945 1]; the mass
    # p in (.807, .825] gives 3 + 2 = 5 = L*T*kept frames
    assert layer_budgets(scores, kept=0.625, temp=1.0, tol=0).tolist() == [3, 2]
    # temp 0: every layer gets exactly floor(T*kept) = 2
    assert layer_budgets(scores, kept=0.625, temp=0.0, tol=0).tolist() == [2, 2]


def test_layer_budgets_sum_to_the_kept_fraction_within_bounds():
    torch.manual_seed(0)
    scores = torch.randn(6, 20)
    k = layer_budgets(scores, kept=0.6, temp=0.5)
    assert int(k.sum()) == round(6 * 20 * 0.6)
    assert int(k.min()) >= 6 and int(k.max()) <= 18  # [floor(12*0.5), floor(12*1.5)]


def test_retention_keeps_top_frames_per_layer_and_the_summary():
    # one segment unit of 4 frames (2 tokens each), then a summary unit; layer 1 prefers other frames
    d = 2
    keys = torch.zeros(2, 1, 8, d)
    keys[0, 0, 0:2] = torch.tensor([1.0, 0.0])  # layer 0: frame 0 matches the guidance
    keys[1, 0, 6:8] = torch.tensor([1.0, 0.0])  # layer 1: frame 3 matches
    frames = [0, 0, 1, 1, 2, 2, 3, 3]
    memory = memory_of([
        {"keys": keys, "values": torch.ones(2, 1, 8, d), "frame": frames, "patch": [0, 1] * 4},
        {"keys": torch.zeros(2, 1, 2, d), "values": torch.ones(2, 1, 2, d), "frame": [4, 4], "kind": "summary"},
    ], layers=2)

    def probe(_text):
        return [torch.tensor([[[1.0, 0.0]]])] * 2, torch.zeros(1, 1, dtype=torch.long)

    StreamKV(StreamKVOptions(kept_fraction=0.25, temp=0.0)).retain(
        memory, RetainContext(budget=None, new_units=[0, 1], now=3.0, n_heads=1, probe=probe))
    assert memory.layers[0].frame[0].tolist() == [0, 0, 4, 4]
    assert memory.layers[1].frame[0].tolist() == [3, 3, 4, 4]
