"""LiveVLM Vision Sink Bucketing, by hand."""

import torch

from streamvqa.policies.livevlm import vsb_select


def test_buckets_spread_the_kept_tokens_over_positions():
    scores = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    positions = torch.arange(6)
    none = torch.zeros(6, dtype=torch.bool)
    # 3 buckets of one token: {0,1} {2,3} {4,5}; phase 1 keeps the best (0), phase 2 one per bucket
    assert vsb_select(scores, positions, budget=3, capacity=1, phase1=1, forced=none).tolist() == [0, 2, 4]
    # phase 1 over the whole budget is plain top-k
    assert vsb_select(scores, positions, budget=3, capacity=1, phase1=3, forced=none).tolist() == [0, 1, 2]


def test_forced_tokens_stay_and_the_count_is_exact():
    scores = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    forced = torch.tensor([False, False, False, False, False, True])  # the short-term FIFO
    kept = vsb_select(scores, torch.arange(6), budget=3, capacity=1, phase1=1, forced=forced)
    assert kept.tolist() == [0, 2, 5]
