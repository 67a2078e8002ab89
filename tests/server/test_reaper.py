"""Failed and ended streams stop holding slots: only live streams count against max_streams, and
the reaper deletes final streams (memory included) after stream_retention_s, not before."""

from __future__ import annotations

import time
from pathlib import Path

from tests.ingest.conftest import closed_port
from tests.server.conftest import wait_stream, wait_until
from tests.server.hanging import hanging  # noqa: F401 - fixture


def error_of(r) -> str:
    return r.json()["error"]["code"]


def test_failed_streams_do_not_count_against_max_streams(make_client, hanging) -> None:  # noqa: F811
    client = make_client(max_streams=1, max_retries=0, open_timeout_s=60.0, read_timeout_s=60.0)
    r = client.post("/v1/streams", json={"url": f"rtsp://127.0.0.1:{closed_port()}/x"})
    assert r.status_code == 201
    failed = r.json()["id"]
    assert wait_stream(client, failed, lambda s: s["state"] == "failed")["state"] == "failed"
    r = client.post("/v1/streams", json={"url": hanging.url()})  # the failed one holds no slot
    assert r.status_code == 201, r.text
    r = client.post("/v1/streams", json={"url": hanging.url()})  # the live one does
    assert r.status_code == 429 and error_of(r) == "too_many_streams"
    assert client.get(f"/v1/streams/{failed}").json()["state"] == "failed"  # still there until reaped


def test_too_many_live_streams(make_client, hanging) -> None:  # noqa: F811
    client = make_client(max_streams=1, open_timeout_s=60.0, read_timeout_s=60.0)
    assert client.post("/v1/streams", json={"url": hanging.url()}).status_code == 201
    assert error_of(client.post("/v1/streams", json={"url": hanging.url()})) == "too_many_streams"


def test_ended_stream_answers_until_retention_then_is_reaped(make_client, engine, clip: Path) -> None:
    client = make_client(stream_retention_s=600.0)
    streams = client.app.state.server.streams
    sid = client.post("/v1/streams", json={"url": clip.as_uri()}).json()["id"]
    info = wait_stream(client, sid, lambda s: s["state"] == "ended")
    assert info["state"] == "ended" and info["frames_encoded"] > 0
    now = time.monotonic()
    assert client.portal.call(streams.reap, now) == []  # starts the clock (if no sweep did)
    assert client.portal.call(streams.reap, now + 599.0) == []
    r = client.post(f"/v1/streams/{sid}/questions", json={"question": "what is shown?"})
    assert r.status_code == 200 and r.json()["answer"] is not None  # its memory is still answerable
    assert sid in engine.sessions
    assert client.portal.call(streams.reap, now + 601.0) == [sid]
    assert error_of(client.get(f"/v1/streams/{sid}")) == "unknown_stream"
    assert sid not in engine.sessions  # engine session and its blocks are gone
    assert sum(engine.store.bytes_by_tier(sid).values()) == 0


def test_reaper_runs_in_the_background(make_client, engine, clip: Path) -> None:
    client = make_client(stream_retention_s=0.2)
    sid = client.post("/v1/streams", json={"url": clip.as_uri()}).json()["id"]
    assert wait_until(lambda: client.get(f"/v1/streams/{sid}").status_code == 404, 60)
    assert sid not in engine.sessions
    assert client.get("/v1/streams").json()["streams"] == []


def test_concurrent_creates_cannot_overshoot_the_cap(make_client, clip: Path) -> None:
    """Two creates that both pass the first capacity check (each waits in its probe until the
    other is there too): the second is refused when it is about to be added."""
    import asyncio
    import threading

    from streamvqa.workers.ingest import probe_source
    from tests.server.doubles import EngineDouble

    client = make_client(engine_override=EngineDouble(), max_streams=1, realtime_files=True)
    streams = client.app.state.server.streams
    real_probe = streams.sources.probe
    waiting = []

    async def probe_in_step(fn, *args):  # fault injection: hold each probe until both are in
        waiting.append(1)
        while len(waiting) < 2:
            await asyncio.sleep(0.01)
        return await real_probe(probe_source, *args)

    streams.sources.probe = probe_in_step
    results = []

    def create() -> None:
        results.append(client.post("/v1/streams?probe=true", json={"url": clip.as_uri()}))

    threads = [threading.Thread(target=create) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(r.status_code for r in results) == [201, 429]
    assert len(client.get("/v1/streams").json()["streams"]) == 1
    assert len(client.app.state.server.engine.sessions) == 1  # the refused one's session was closed
