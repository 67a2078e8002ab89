"""Optional lossy compression of cold blocks: symmetric int8 with one scale per group.

Scheme names: ``"none"`` (exact) or ``"int8-g{G}"`` — keys and values are split into groups of
G consecutive elements along head_dim (G must divide head_dim, else one group per row), each
group stored as int8 with a float32 scale ``absmax / 127``. Error per element ≤ scale / 2; bytes
≈ 0.53× of bf16/fp16 at G=64. Positions, rep_keys and meta are never quantized. Quantization
breaks exact mode (DESIGN invariant 2): enable it only on cold tiers where that is acceptable.
"""

from __future__ import annotations

import re

import torch

_SCHEME = re.compile(r"^int8-g(\d+)$")


def parse_scheme(scheme: str) -> int | None:
    """Group size of an int8 scheme, None for "none"; ValueError for anything else."""
    if scheme == "none":
        return None
    m = _SCHEME.match(scheme)
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"unknown quantization scheme {scheme!r} (use 'none' or 'int8-g<G>')")
    return int(m.group(1))


def _groups(t: torch.Tensor, group: int) -> torch.Tensor:
    d = t.shape[-1] if t.dim() else 1
    g = group if d and d % group == 0 else max(d, 1)
    return t.reshape(*t.shape[:-1], d // g if d else 0, g) if t.dim() else t.reshape(1, 1)


def quantize(t: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 values with t's shape, float32 scales [..., n_groups])."""
    x = _groups(t.detach().to("cpu", torch.float32), group)
    scale = x.abs().amax(dim=-1) / 127.0
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(x / safe[..., None]).clamp_(-127, 127).to(torch.int8)
    return q.reshape(t.shape), scale.contiguous()


def dequantize(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    x = q.reshape(*scale.shape, -1).to(torch.float32) * scale[..., None]
    return x.reshape(q.shape).to(dtype)
