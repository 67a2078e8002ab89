"""Closing a stream frees its memory at once: no reference cycle keeps a session (or any of its
tensors) alive until Python's cycle collector runs. Checked with the collector disabled."""

from __future__ import annotations

import gc
import weakref

import pytest

from streamvqa.engine import Engine, EngineConfig
from tests.engine.conftest import get_adapter, make_frames

# every code path: plain (rekv, full, sliding-window), memory stages with demotion (hybrid-kv) or
# kept inputs (hybrid),
# semantic units (streamkv), encode-on-memory with captions (rlivs), quantized memory (streamingtom)
METHODS = ["rekv", "full", "sliding-window", "hybrid", "hybrid-kv", "streamkv", "rlivs", "streamingtom", "infinipot-v"]


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(EngineConfig(model="tiny:smolvlm", threads=1), adapter=get_adapter("tiny:smolvlm"))


def _tensors(session) -> list[weakref.ref]:
    """Weak references to tensors the session owns: sink, window cache, stored blocks, answer
    cache, retained memory."""
    refs = [weakref.ref(session.window.sink.keys)]
    refs += [weakref.ref(layer.keys) for layer in session.window.cache.layers if getattr(layer, "keys", None) is not None]
    index = session.store.index(session.stream_id)
    refs += [weakref.ref(b.keys) for b in session.store.get_many(session.stream_id, index.indices)]
    if session.answer_cache is not None:
        refs += [weakref.ref(layer.keys) for layer in session.answer_cache.cache.layers]
    if session.retainer is not None:
        refs += [weakref.ref(layer.keys) for layer in session.retainer.memory.layers]
    return refs


@pytest.mark.parametrize("method", METHODS)
def test_close_frees_session_without_cycle_collector(engine: Engine, method: str) -> None:
    gc.collect()
    gc.disable()
    try:
        session = engine.open_stream("release", method=method)
        for image, t in make_frames(6):
            session.push_frame(image, t)
        session.answer("What is shown?", max_tokens=3)
        session.answer("What is shown?", max_tokens=3)  # a follow-up reuses the answer cache
        ref = weakref.ref(session)
        tensors = _tensors(session)
        assert len(tensors) > 3
        engine.close_stream("release")
        del session
        assert ref() is None, "the session is kept alive by a reference cycle"
        assert [r for r in tensors if r() is not None] == []
    finally:
        gc.enable()
        engine.sessions.pop("release", None)
