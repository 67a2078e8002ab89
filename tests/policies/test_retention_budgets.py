"""Byte budgets per tier per stream: the memory budget becomes a token cap, the device budget
makes room before each forward, and a unit larger than the device budget is refused."""

import pytest

from streamvqa.engine import Engine, EngineError
from tests.engine.conftest import get_adapter, make_frames


def bytes_per_token(adapter) -> int:
    return 2 * adapter.n_kv_heads * adapter.head_dim * 4 * adapter.n_layers  # K + V, fp32, all layers


def test_memory_bytes_cap_the_retained_tokens():
    adapter = get_adapter("tiny:smolvlm")
    budget = 25 * bytes_per_token(adapter)
    session = Engine(adapter=adapter).open_stream("s", method="streamingvlm",
                                                  options={"budget_bytes": {"memory": budget}})
    for image, t in make_frames(10):
        session.push_frame(image, t)
        assert session.stats().kv_bytes["memory"] <= budget
    assert max(session.stats().memory_tokens) <= 25 and session.stats().tokens_evicted > 0


def test_device_budget_bounds_the_encoder_cache_of_the_exact_mode():
    adapter = get_adapter("tiny:smolvlm")
    budget = (session_sink := Engine(adapter=adapter).open_stream("p", method="full").window.sink.n_tokens) \
        * bytes_per_token(adapter) + 60 * bytes_per_token(adapter)
    session = Engine(adapter=adapter).open_stream("s", method="full", options={"budget_bytes": {"device": budget}})
    for image, t in make_frames(10):
        session.push_frame(image, t)
    stats = session.stats()
    assert stats.kv_peak_bytes["device"] <= budget and stats.window_tokens <= 60
    assert session_sink > 0


def test_a_unit_larger_than_the_device_budget_is_refused():
    adapter = get_adapter("tiny:smolvlm")
    session = Engine(adapter=adapter).open_stream("s", method="full", options={"budget_bytes": {"device": 1}})
    image, t = make_frames(1)[0]
    with pytest.raises(EngineError) as e:
        session.push_frame(image, t)
    assert e.value.code == "budget_too_small"
