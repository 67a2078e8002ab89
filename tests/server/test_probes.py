"""Probes of sources that never answer run on their own bounded pool: /health, /metrics and the
control endpoints keep answering meanwhile, and a probe past its deadline is probe_timeout (504)."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from streamvqa.server.app import create_app
from streamvqa.server.main import BackgroundServer
from tests.server.conftest import lean_settings, wait_until
from tests.server.doubles import EngineDouble
from tests.server.hanging import hanging  # noqa: F401 - fixture

N_PROBES = 16


def _probe_all(base: str, url: str, n: int) -> tuple[list[threading.Thread], list[httpx.Response | None]]:
    results: list[httpx.Response | None] = [None] * n

    def one(i: int) -> None:
        with httpx.Client(base_url=base, timeout=120) as c:
            results[i] = c.post("/v1/streams?probe=true", json={"url": url})

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    return threads, results


def test_control_endpoints_answer_while_probes_hang(hanging, clip: Path) -> None:  # noqa: F811
    # FFmpeg and the probe deadline both far away: every probe hangs for the whole test body
    settings = lean_settings(host="127.0.0.1", port=0, log_level="warning", probe_workers=4,
                             probe_timeout_s=120.0, open_timeout_s=120.0, read_timeout_s=120.0)
    server = BackgroundServer(create_app(settings, engine=EngineDouble()), settings).start()
    try:
        http = httpx.Client(base_url=server.url, timeout=60)
        assert wait_until(lambda: http.get("/ready").status_code == 200, 30)
        pool = server.server.config.app.state.server.streams.sources
        threads, results = _probe_all(server.url, hanging.url(), N_PROBES)
        assert wait_until(lambda: pool.running == 4 and pool.waiting == N_PROBES - 4, 60)
        assert http.get("/health").status_code == 200
        metrics = http.get("/metrics")
        assert metrics.status_code == 200 and "vqa_streams_active" in metrics.text
        r = http.post("/v1/streams", json={"url": clip.as_uri()})
        assert r.status_code == 201, r.text
        assert http.get("/v1/streams").status_code == 200
        assert http.delete(f"/v1/streams/{r.json()['id']}").status_code == 204
        # all of that answered while every probe was still hanging
        assert results == [None] * N_PROBES and pool.running == 4
        hanging.close()  # the source goes away: the probes fail fast, each with its own error
        for t in threads:
            t.join(120)
        codes = {r.json()["error"]["code"] for r in results if r is not None}
        assert all(r is not None and r.status_code == 422 for r in results) and codes == {"source_unreachable"}
        assert wait_until(lambda: pool.running == 0 and pool.waiting == 0, 30)
        http.close()
    finally:
        server.stop()


def test_probe_deadline_is_probe_timeout(make_client, hanging) -> None:  # noqa: F811
    client = make_client(engine_override=EngineDouble(), probe_workers=1, probe_timeout_s=1.0,
                         open_timeout_s=60.0, read_timeout_s=60.0)
    threads, results = [], [None, None]

    def one(i: int) -> None:
        results[i] = client.post("/v1/streams?probe=true", json={"url": hanging.url()})

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(2)]
    for t in threads:  # one probe on the only worker, one waiting for it: both past the deadline
        t.start()
    for t in threads:
        t.join(60)
    for r in results:
        assert r is not None and r.status_code == 504, r
        assert r.json()["error"] == {"code": "probe_timeout",
                                     "message": "the source did not answer the probe within 1 s"}
    assert client.get("/v1/streams").json()["streams"] == []  # no stream was created
