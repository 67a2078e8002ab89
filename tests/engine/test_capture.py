"""Captured K/V leave the device through `to_host` (pinned memory on CUDA: tests/engine/test_cuda.py)."""

import torch

from streamvqa.engine.capture import to_host


def test_host_tensors_pass_through_without_a_copy():
    x = torch.randn(2, 3)
    assert to_host(x) is x
