"""What `TieredStore` knows of every live block, whichever tier holds its bytes.

Per block an `Entry` (generation, size, time range, representative keys, the tiers holding a
copy); per stream its acknowledged blocks, the retrieval index built from them on demand, and
the blocks it lost for good. Representative keys are kept once: building a stream's index stacks
them and re-points every entry at its row of the stacked tensor, so the cache and the entries
share one copy.

Not thread-safe by itself: the store's metadata lock guards it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from streamvqa.store.base import StreamIndex
from streamvqa.store.keys import BlockKey


@dataclass
class Entry:
    gen: int
    size: int
    t_start: float
    t_end: float
    rep_keys: torch.Tensor
    tiers: set[int] = field(default_factory=set)
    acked: bool = False


class BlockIndex:
    def __init__(self) -> None:
        self.entries: dict[BlockKey, Entry] = {}
        self._streams: dict[str, set[int]] = {}
        self._cache: dict[str, StreamIndex] = {}
        self._lost: dict[str, dict[int, tuple[float, float]]] = {}  # stream -> lost block -> times

    def get(self, key: BlockKey) -> Entry | None:
        return self.entries.get(key)

    def __contains__(self, key: BlockKey) -> bool:
        return key in self.entries

    def add(self, key: BlockKey, entry: Entry) -> None:
        """A block being written (not yet in its stream's index unless `entry.acked`)."""
        self.entries[key] = entry
        self._lost.get(key.stream_id, {}).pop(key.index, None)
        if entry.acked:
            self.ack(key)

    def ack(self, key: BlockKey) -> None:
        """The block is acknowledged: retrieval sees it from now on."""
        self.entries[key].acked = True
        self._streams.setdefault(key.stream_id, set()).add(key.index)
        self._cache.pop(key.stream_id, None)

    def pop(self, key: BlockKey) -> Entry | None:
        entry = self.entries.pop(key, None)
        if key.stream_id in self._streams:
            self._streams[key.stream_id].discard(key.index)
            self._cache.pop(key.stream_id, None)
        return entry

    def drop_stream(self, stream_id: str) -> list[tuple[BlockKey, Entry]]:
        """Forget a stream (its lost blocks too); returns the entries it had."""
        keys = [k for k in self.entries if k.stream_id == stream_id]
        gone = [(k, self.entries.pop(k)) for k in keys]
        self._streams.pop(stream_id, None)
        self._cache.pop(stream_id, None)
        self._lost.pop(stream_id, None)
        return gone

    def stream_index(self, stream_id: str, key_of) -> StreamIndex:
        """Indices, stacked rep keys and times of a stream's acknowledged blocks (cached until
        the stream changes). `key_of(stream_id, index)` gives a block's key."""
        cached = self._cache.get(stream_id)
        if cached is not None:
            return cached
        order = sorted(self._streams.get(stream_id, ()))
        if not order:
            return StreamIndex([], torch.empty(0), [])
        entries = [self.entries[key_of(stream_id, i)] for i in order]
        rep = torch.stack([e.rep_keys for e in entries])
        for row, e in zip(rep, entries, strict=True):
            e.rep_keys = row  # one copy: the entry now views the stacked tensor
        idx = StreamIndex(order, rep, [(e.t_start, e.t_end) for e in entries])
        self._cache[stream_id] = idx
        return idx

    def mark_lost(self, key: BlockKey) -> Entry | None:
        """An acknowledged block with no copy left: out of the index, remembered as lost."""
        entry = self.pop(key)
        if entry is not None:
            self._lost.setdefault(key.stream_id, {})[key.index] = (entry.t_start, entry.t_end)
        return entry

    def lost_blocks(self, stream_id: str) -> dict[int, tuple[float, float]]:
        return dict(self._lost.get(stream_id, {}))
