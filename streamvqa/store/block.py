"""The unit of KV memory: one stream unit's keys and values for every layer.

Keys are stored position-free (before RoPE) so a block can be re-placed at any position at
question time; each token keeps the position it was encoded at (1 row for 1-D RoPE, 3 rows for
Qwen M-RoPE) so original positions can be restored too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Block:
    stream_id: str
    index: int  # unit index within the stream, 0-based, dense
    t_start: float  # presentation time of the unit's first frame (seconds)
    t_end: float  # presentation time of the unit's last frame (seconds)
    keys: torch.Tensor  # [layers, kv_heads, tokens, head_dim], pre-RoPE
    values: torch.Tensor  # [layers, kv_heads, tokens, head_dim]
    positions: torch.Tensor  # [P, tokens] int64, P = 1 (1-D RoPE) or 3 (M-RoPE)
    pos_start: int  # text-position counter before the unit
    pos_end: int  # text-position counter after the unit (pos_end - pos_start = its extent)
    rep_keys: torch.Tensor  # [layers, kv_heads, head_dim]: mean pre-RoPE key (ReKV index)
    meta: dict = field(default_factory=dict)  # policy annotations (e.g. summary unit, caption)

    @property
    def n_tokens(self) -> int:
        return int(self.keys.shape[2])

    @property
    def extent(self) -> int:
        return self.pos_end - self.pos_start

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in (self.keys, self.values, self.positions, self.rep_keys))

    @property
    def key(self) -> tuple[str, int]:
        return (self.stream_id, self.index)
