"""InfiniPot-V: TaR and VaN against hand-computed cases, and the combined selection."""

import math

import torch

from streamvqa.policies.infinipot_v import InfiniPotOptions, InfiniPotV, tar_scores, van_scores
from streamvqa.policies.memory import RetainContext
from tests.policies.helpers_memory import memory_of


def test_tar_is_minus_the_mean_cosine_to_the_same_patch_in_recent_frames():
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    frame = torch.tensor([0, 0, 1, 1, 2])
    patch = torch.tensor([0, 1, 0, 1, 1])
    recent = frame >= 1
    s = tar_scores(keys, frame, patch, recent)
    # f0p0 vs recent patch 0: (1,0)~(1,0) -> cos 1; f0p1 vs recent patch 1: (0,1) vs (2,0), (0,3) -> mean(0, 1)
    assert torch.allclose(s[:2], torch.tensor([-1.0, -0.5]))
    assert torch.isinf(s[2:]).all() and (s[2:] < 0).all()  # recent tokens are not scored


def test_van_is_the_value_norm_optionally_pooled():
    v = torch.tensor([[3.0, 4.0], [0.0, 1.0], [0.0, 0.0]])
    assert torch.equal(van_scores(v), torch.tensor([5.0, 1.0, 0.0]))
    assert torch.allclose(van_scores(v, kernel=3), torch.tensor([3.0, 2.0, 0.5]))


def test_compression_keeps_recent_frames_then_tar_then_van():
    # 4 frames x 2 patches; frame 1 patch 1 differs from the recent frame's patch 1 (not redundant)
    same = [[1.0, 0.0], [0.0, 1.0]]
    units = [{"keys": same, "values": [[1.0, 0.0], [9.0, 0.0]]} for _ in range(4)]
    units[1]["keys"] = [[1.0, 0.0], [1.0, 0.0]]
    memory = memory_of(units)
    policy = InfiniPotV(InfiniPotOptions(cap_tokens=6, keep_fraction=0.5, tar_ratio=1.0, recent_ratio=0.25))
    policy.retain(memory, RetainContext(budget=None, new_units=[3], now=3.0, n_heads=1))
    kept = list(zip(memory.layers[0].frame[0].tolist(), memory.layers[0].patch[0].tolist(), strict=True))
    # B = 3: frame 3 (recent, 2 tokens) + the one TaR pick (frame 1 patch 1); VaN alone would take patch 1s
    assert kept == [(1, 1), (3, 0), (3, 1)]
    assert memory.tokens == [3]


def test_no_compression_below_the_cap():
    memory = memory_of([{"keys": [[1.0, 0.0]], "values": [[1.0, 0.0]]}] * 3)
    InfiniPotV(InfiniPotOptions(cap_tokens=3)).retain(memory, RetainContext(budget=None, new_units=[2], now=2.0, n_heads=1))
    assert memory.tokens == [3]
    assert math.floor(0.75 * 4) == 3  # |C| = keep_fraction * |M|
