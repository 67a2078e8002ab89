"""`store.put` in the kvstore when the store cannot take the block (issue 17, item 5): a clear
error code, and the staging segment's mapping is closed (no `BufferError: cannot close exported
pointers exist` from tensors that a failed put's traceback kept alive)."""

from __future__ import annotations

import gc
import socket
import sys

import pytest

from streamvqa.proto import ipc
from streamvqa.store import format as fmt
from streamvqa.store import shm
from streamvqa.workers.multi.config import MultiConfig
from streamvqa.workers.multi.kvstore import KvStoreService
from tests.store.helpers import make_block

PREFIX = "svqkvput"


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def _stage(block) -> tuple[str, int]:
    planned = fmt.plan(block, "fp")
    seg = shm.create_segment(shm.new_segment_name(PREFIX), planned.size)
    planned.write_into(seg.buf)
    name = seg.name
    shm.release_segment(seg, unlink=False)
    return name, planned.size


def test_failed_put_answers_store_full_and_frees_the_segment(tmp_path, monkeypatch):
    size = len(fmt.plan(make_block(0), "fp").to_bytes())
    store = {"tiers": [{"kind": "host", "budget_bytes": 1 << 20, "shm_prefix": PREFIX},
                       {"kind": "redis", "url": f"redis://127.0.0.1:{_dead_port()}/0", "budget_bytes": 1 << 20,
                        "socket_timeout_s": 0.5}],
             "durable": True, "spill": {"path": str(tmp_path / "spill"), "budget_bytes": size * 2},
             "write_behind": {"put_timeout_s": 0.2}}
    unraisable: list[BaseException] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: unraisable.append(u.exc_value))
    service = KvStoreService(MultiConfig(model="tiny:smolvlm", run_dir=str(tmp_path), store=store), "fp")
    staged = []
    try:
        for i in range(2):  # Redis is down: the spill area takes these
            name, length = _stage(make_block(i))
            staged.append(name)
            service.put(ipc.PutBlock(stream_id="cam-1", index=i, segment=name, length=length), [], None)
        name, length = _stage(make_block(2))
        staged.append(name)
        with pytest.raises(ipc.IpcError) as err:  # spill full past put_timeout_s
            service.put(ipc.PutBlock(stream_id="cam-1", index=2, segment=name, length=length), [], None)
        assert err.value.code == "store_full"
        assert "Traceback" not in err.value.message and str(tmp_path) not in err.value.message
        gc.collect()
        assert not [e for e in unraisable if isinstance(e, BufferError)], unraisable
        assert service.store.index("cam-1").indices == [0, 1]
    finally:
        service.close()
        for n in staged:
            shm.unlink_segment(n)
    assert not shm.list_segments(PREFIX)
