"""/metrics tells no key another key's stream ids (issue 17, item 15): no series has a stream
label; the largest encode lag is aggregated, and each stream's own lag is in its keyed GET."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.server.doubles import EngineDouble, SessionDouble

from .conftest import ALICE, BOB, bearer, wait_stream


class _SlowSession(SessionDouble):
    """Takes its first frame only when ``gate`` opens (a stalled encoder: fault injection)."""

    def push_frame(self, image: Any, t: float) -> None:
        self.engine.gate.wait(30)
        super().push_frame(image, t)


class _SlowEngine(EngineDouble):
    def open_stream(self, stream_id: str, method: str = "rekv", options: dict | None = None) -> SessionDouble:
        super().open_stream(stream_id, method, options)
        self.sessions[stream_id] = _SlowSession(self, stream_id, method)
        return self.sessions[stream_id]


def samples(text: str) -> dict[str, float]:
    return {k: float(v) for k, _, v in (line.rpartition(" ") for line in text.splitlines()
                                           if line and not line.startswith("#"))}


def test_metrics_show_no_stream_ids_of_other_keys(secure_client, media: Path) -> None:
    engine = _SlowEngine()
    engine.gate.clear()
    client = secure_client(engine_override=engine, realtime_files=False)
    a, b = bearer(ALICE), bearer(BOB)
    ids = {}
    for who, headers, fps in (("alice", a, 5), ("bob", b, 2)):
        r = client.post("/v1/streams", json={"url": "clip.mp4", "fps": fps}, headers=headers)
        assert r.status_code == 201, r.text
        ids[who] = r.json()["id"]
    try:
        lags = {}
        for who, headers in (("alice", a), ("bob", b)):
            info = wait_stream(_Authed(client, headers), ids[who], lambda s: s["frames_decoded"] == 30)
            assert info["encode_lag_s"] > 0, info  # decoded ahead of the stalled encoder
            lags[who] = info["encode_lag_s"]
        for headers, other in ((b, ids["alice"]), (a, ids["bob"])):
            r = client.get("/metrics", headers=headers)
            assert r.status_code == 200
            assert other not in r.text and "stream=" not in r.text
            assert samples(r.text)["vqa_encode_lag_seconds"] == max(lags.values())
        # the per-stream figure stays with its owner
        assert client.get(f"/v1/streams/{ids['alice']}", headers=b).status_code == 404
    finally:
        engine.gate.set()


class _Authed:
    """``get`` with fixed headers (for wait_stream)."""

    def __init__(self, client, headers: dict) -> None:
        self.client, self.headers = client, headers

    def get(self, url: str):
        return self.client.get(url, headers=self.headers)
