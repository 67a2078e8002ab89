"""Forward hooks that capture pre-RoPE queries, keys and values of every layer.

The projections' outputs are exactly the position-free tensors (the families we serve have no
q/k norm), so no attention code is patched: hooks observe the stock modules.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from streamvqa.models import batching


class Capture:
    """Per-layer outputs of q_proj / k_proj / v_proj during one forward call."""

    def __init__(self, n_layers: int) -> None:
        self.q: list[torch.Tensor | None] = [None] * n_layers
        self.k: list[torch.Tensor | None] = [None] * n_layers
        self.v: list[torch.Tensor | None] = [None] * n_layers
        self.wants = (False, True)  # (queries, keys and values): what a batched forward fills

    @staticmethod
    def heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
        """[1, n, heads*d] -> [heads, n, d]."""
        n = x.shape[1]
        return x[0].view(n, -1, head_dim).transpose(0, 1)


def to_host(t: torch.Tensor) -> torch.Tensor:
    """A captured tensor on the host. From CUDA through page-locked (pinned) memory: one DMA,
    no pageable staging copy, on the encoder's path to the store; host tensors pass through."""
    if not t.is_cuda:
        return t
    out = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    return out.copy_(t)


@contextmanager
def capture(layers: list[nn.Module], q: bool = False, kv: bool = True):
    """Yield a Capture filled by the next forward over `layers` (attention modules)."""
    cap = Capture(len(layers))
    cap.wants = (q, kv)
    if batching.current() is not None:  # the batched forward fills it with this stream's slice
        with batching.capturing(cap):
            yield cap
        return
    handles = []

    def hook(store: list, i: int):
        def fn(_module, _inputs, output):
            store[i] = output.detach()

        return fn

    for i, attn in enumerate(layers):
        if q:
            handles.append(attn.q_proj.register_forward_hook(hook(cap.q, i)))
        if kv:
            handles.append(attn.k_proj.register_forward_hook(hook(cap.k, i)))
            handles.append(attn.v_proj.register_forward_hook(hook(cap.v, i)))
    try:
        yield cap
    finally:
        for h in handles:
            h.remove()
