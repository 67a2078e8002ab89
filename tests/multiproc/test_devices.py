"""Several encoder and answer workers (one per device): streams are spread over the encoders, a
stream keeps its answer worker, and a dead encoder only interrupts its own streams."""

from __future__ import annotations

import signal

import pytest

from streamvqa.engine.errors import EngineError
from tests.multiproc.conftest import frames, make_config, prefix, stop_cluster


@pytest.fixture(scope="module")
def two_by_two():
    from streamvqa.workers.multi.facade import MultiEngine

    store = {"tiers": [{"kind": "host", "budget_bytes": 64 << 20, "shm_prefix": prefix("m")}]}
    engine = MultiEngine(make_config(store, encoder_devices=["cpu", "cpu"], answer_devices=["cpu", "cpu"]))
    try:
        yield engine
    finally:
        stop_cluster(engine)


@pytest.mark.slow
def test_streams_spread_and_failures_stay_local(two_by_two):
    engine = two_by_two
    assert list(engine.supervisor.workers) == ["kvstore", "encoder", "encoder-1", "answer", "answer-1"]
    a, b = engine.open_stream("da", "rekv", {}), engine.open_stream("db", "rekv", {})
    try:
        assert {a.encoder, b.encoder} == {"encoder", "encoder-1"}
        clip = frames(8, seed=8)
        for i in range(3):
            a.push_frame(clip[i], float(i))
            b.push_frame(clip[i], float(i))
        assert a.answer("what is shown?", max_tokens=6).token_ids == b.answer("what is shown?", max_tokens=6).token_ids
        victim, other = (a, b) if a.encoder == "encoder-1" else (b, a)
        restarts = engine.supervisor.workers["encoder-1"].restarts
        engine.supervisor.kill("encoder-1", signal.SIGKILL)
        other.push_frame(clip[3], 3.0)  # the other encoder is unaffected
        with pytest.raises(EngineError):
            victim.push_frame(clip[3], 3.0)
        assert engine.supervisor.wait_up("encoder-1", 240, after_restarts=restarts + 1)
        for i in range(4, 8):
            victim.push_frame(clip[i], float(i))
            other.push_frame(clip[i], float(i))
        assert engine.store.index(other.stream_id).indices == list(range(8))
        assert engine.store.index(victim.stream_id).indices == list(range(7))  # frame 3 was lost
    finally:
        engine.close_stream("da")
        engine.close_stream("db")
