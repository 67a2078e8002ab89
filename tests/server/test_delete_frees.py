"""DELETE frees a stream's memory at once: nothing on the delete path (registry entry, ingest
worker, engine session, answer cache) keeps the session alive until the cycle collector runs."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest

from .conftest import wait_stream


@pytest.mark.parametrize("method", ["rekv", "hybrid", "sliding-window"])
def test_delete_frees_session_with_cycle_collector_off(client, engine, clip: Path, method: str) -> None:
    r = client.post("/v1/streams", json={"url": clip.as_uri(), "fps": 5, "method": method})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    final = wait_stream(client, sid, lambda s: s["state"] == "ended")
    assert final["frames_encoded"] == 15, final
    r = client.post(f"/v1/streams/{sid}/questions", json={"question": "What number is shown?", "max_tokens": 4})
    assert r.status_code == 200, r.text
    session = engine.sessions[sid]
    refs = [weakref.ref(session), weakref.ref(session.window.sink.keys)]
    refs += [weakref.ref(b.keys) for b in session.window.blocks]
    del session
    gc.collect()
    gc.disable()
    try:
        assert client.delete(f"/v1/streams/{sid}").status_code == 204
        assert sid not in engine.sessions
        assert [r for r in refs if r() is not None] == []
    finally:
        gc.enable()
