"""Synthetic blocks for store tests."""

from __future__ import annotations

import zlib

import torch

from streamvqa.store.block import Block


def make_block(
    index: int,
    stream_id: str = "cam-1",
    *,
    dtype: torch.dtype = torch.float16,
    layers: int = 2,
    heads: int = 2,
    tokens: int = 8,
    head_dim: int = 16,
    rope_rows: int = 1,
    seed: int | None = None,
    meta: dict | None = None,
) -> Block:
    """A deterministic random block (same arguments → same tensors)."""
    g = torch.Generator().manual_seed(
        seed if seed is not None else zlib.crc32(f"{stream_id}:{index}".encode())
    )
    keys = torch.randn(layers, heads, tokens, head_dim, generator=g).to(dtype)
    values = torch.randn(layers, heads, tokens, head_dim, generator=g).to(dtype)
    pos_start = index * tokens
    positions = torch.arange(pos_start, pos_start + tokens, dtype=torch.int64).repeat(rope_rows, 1)
    return Block(
        stream_id=stream_id,
        index=index,
        t_start=index * 0.5,
        t_end=index * 0.5 + 0.4375,
        keys=keys,
        values=values,
        positions=positions,
        pos_start=pos_start,
        pos_end=pos_start + tokens,
        rep_keys=keys.float().mean(dim=2),
        meta=dict(meta) if meta is not None else {"unit": "block", "frames": [index * 2, index * 2 + 1]},
    )


def assert_same_block(a: Block, b: Block) -> None:
    """Exact equality of every field (bitwise for tensors, dtype and shape included)."""
    assert (a.stream_id, a.index, a.t_start, a.t_end, a.pos_start, a.pos_end) == (
        b.stream_id,
        b.index,
        b.t_start,
        b.t_end,
        b.pos_start,
        b.pos_end,
    )
    for name in ("keys", "values", "positions", "rep_keys"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert torch.equal(
            x.view(torch.uint8) if x.dtype != torch.bool else x,
            y.view(torch.uint8) if y.dtype != torch.bool else y,
        ), name
    assert a.meta.keys() == b.meta.keys()
    for k, v in a.meta.items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, b.meta[k])
        else:
            assert v == b.meta[k]
