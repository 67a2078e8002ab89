"""The store's block index: one copy of the representative keys, a true index after changes."""

from __future__ import annotations

import torch

from streamvqa.store.index import BlockIndex, Entry
from streamvqa.store.keys import BlockKey
from tests.store.helpers import make_block

FP = "fp-index"


def _key(stream: str, i: int) -> BlockKey:
    return BlockKey(FP, stream, i)


def _add(index: BlockIndex, i: int, stream: str = "cam-1") -> torch.Tensor:
    b = make_block(i, stream)
    rep = b.rep_keys.clone()
    index.add(_key(stream, i), Entry(gen=i + 1, size=1, t_start=b.t_start, t_end=b.t_end, rep_keys=rep))
    index.ack(_key(stream, i))
    return b.rep_keys


def test_rep_keys_are_held_once_entries_view_the_stacked_index():
    index = BlockIndex()
    want = [_add(index, i) for i in range(5)]
    idx = index.stream_index("cam-1", _key)
    assert idx.indices == list(range(5))
    assert torch.equal(idx.rep_keys, torch.stack(want))
    base = idx.rep_keys.untyped_storage().data_ptr()
    for i in range(5):  # no second copy per entry (~45 KiB per block at SmolLM2 sizes)
        assert index.get(_key("cam-1", i)).rep_keys.untyped_storage().data_ptr() == base


def test_index_is_rebuilt_exactly_after_puts_pops_and_losses():
    index = BlockIndex()
    want = {i: _add(index, i) for i in range(4)}
    index.stream_index("cam-1", _key)
    want[9] = _add(index, 9)
    index.pop(_key("cam-1", 1))
    del want[1]
    index.mark_lost(_key("cam-1", 2))
    del want[2]
    idx = index.stream_index("cam-1", _key)
    assert idx.indices == sorted(want)
    assert torch.equal(idx.rep_keys, torch.stack([want[i] for i in sorted(want)]))
    assert list(index.lost_blocks("cam-1")) == [2]
    _add(index, 2)  # written again: no longer lost
    assert index.lost_blocks("cam-1") == {}
    assert [k.index for k, _ in index.drop_stream("cam-1")] == [0, 3, 9, 2]
    assert index.stream_index("cam-1", _key).indices == []
