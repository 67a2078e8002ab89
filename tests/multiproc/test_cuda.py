"""On CUDA: workers on the GPU answer like embedded mode on the GPU, and blocks read from the
store's shared memory land in pinned (page-locked) host buffers. Skipped without a GPU."""

from __future__ import annotations

import pytest
import torch

from streamvqa.engine import Engine, EngineConfig
from streamvqa.workers.multi.facade import MultiEngine
from streamvqa.workers.multi.remote_store import RemoteStore
from tests.multiproc.conftest import TINY, frames, make_config, prefix, stop_cluster

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.slow
def test_gpu_workers_equal_embedded_and_read_pinned():
    cfg = make_config({"tiers": [{"kind": "host", "budget_bytes": 64 << 20, "shm_prefix": prefix("g")}]},
                      encoder_device="cuda:0", answer_device="cuda:0")
    engine = MultiEngine(cfg)
    emb = Engine(EngineConfig(model=TINY, device="cuda:0"))
    try:
        a_s, b_s = emb.open_stream("g", "rekv", {}), engine.open_stream("g", "rekv", {})
        for i, f in enumerate(frames(6, seed=7)):
            a_s.push_frame(f, float(i))
            b_s.push_frame(f, float(i))
        a = a_s.answer("what is shown?", max_tokens=12)
        b = b_s.answer("what is shown?", max_tokens=12)
        assert b.token_ids == a.token_ids
        reader = RemoteStore(engine.supervisor.workers["kvstore"].client, engine.store.fingerprint,
                             cfg.shm_prefix, device="cuda:0")
        blocks = reader.get_many("g", list(range(6)))
        assert all(bl.keys.is_pinned() and bl.values.is_pinned() for bl in blocks)
        on_gpu = blocks[0].keys.to("cuda:0", non_blocking=True)
        torch.cuda.synchronize()
        assert torch.equal(on_gpu.cpu(), blocks[0].keys)
    finally:
        emb.close()
        stop_cluster(engine)
