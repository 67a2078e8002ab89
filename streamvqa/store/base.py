"""The block store interface the engine writes to and retrieves from.

The engine only needs `put`, `get_many`, the per-stream index of representative keys and byte
accounting; tiering (host RAM, disk, Redis) lives behind this interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from streamvqa.store.block import Block


@dataclass
class StreamIndex:
    """What retrieval needs to score a stream's blocks without touching their bytes."""

    indices: list[int]  # block indices, ascending (time order)
    rep_keys: torch.Tensor  # [blocks, layers, kv_heads, head_dim]
    times: list[tuple[float, float]]


class BlockStore(Protocol):
    def put(self, block: Block) -> None:
        """Store a block; returns only once the block is whole in its tier (acknowledged)."""

    def get_many(self, stream_id: str, indices: list[int]) -> list[Block]:
        """Blocks in the order asked, promoted to the warmest tier that has room."""

    def index(self, stream_id: str) -> StreamIndex: ...

    def drop_stream(self, stream_id: str) -> None: ...

    def bytes_by_tier(self, stream_id: str | None = None) -> dict[str, int]: ...

    def blocks_by_tier(self, stream_id: str | None = None) -> dict[str, int]: ...

    def prefetch(self, stream_id: str, indices: list[int]) -> int:
        """Start bringing these blocks to the warmest tier in the background (hint; returns how
        many were queued). Stores without cold tiers return 0."""

    def close(self) -> None:
        """Flush pending writes and release resources (shared memory, connections)."""


class MemoryStore:
    """Host-RAM store for the embedded mode: every block kept, nothing demoted (ReKV's default)."""

    tier = "host"

    def __init__(self) -> None:
        self._blocks: dict[str, dict[int, Block]] = {}

    def put(self, block: Block) -> None:
        self._blocks.setdefault(block.stream_id, {})[block.index] = block

    def get_many(self, stream_id: str, indices: list[int]) -> list[Block]:
        blocks = self._blocks.get(stream_id, {})
        return [blocks[i] for i in indices]

    def index(self, stream_id: str) -> StreamIndex:
        blocks = self._blocks.get(stream_id, {})
        order = sorted(blocks)
        if not order:
            return StreamIndex([], torch.empty(0), [])
        return StreamIndex(
            order,
            torch.stack([blocks[i].rep_keys for i in order]),
            [(blocks[i].t_start, blocks[i].t_end) for i in order],
        )

    def drop_stream(self, stream_id: str) -> None:
        self._blocks.pop(stream_id, None)

    def bytes_by_tier(self, stream_id: str | None = None) -> dict[str, int]:
        return {self.tier: sum(b.nbytes for b in self._iter(stream_id))}

    def blocks_by_tier(self, stream_id: str | None = None) -> dict[str, int]:
        return {self.tier: sum(1 for _ in self._iter(stream_id))}

    def prefetch(self, stream_id: str, indices: list[int]) -> int:
        return 0  # everything is already in host RAM

    def close(self) -> None:
        pass

    def _iter(self, stream_id: str | None):
        streams = [stream_id] if stream_id is not None else list(self._blocks)
        for s in streams:
            yield from self._blocks.get(s, {}).values()
