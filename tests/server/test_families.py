"""Every model family streams through the server: a real H.264 clip is decoded, encoded online by
the family's adapter (tiny random model), and a question with retrieval (`rekv`) is answered with
evidence from the clip, over REST."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from streamvqa.engine import Engine, EngineConfig
from streamvqa.models.tiny import FAMILIES
from streamvqa.server.app import create_app

from .conftest import lean_settings, wait_stream


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_family_streams_and_answers_through_the_server(family: str, clip: Path) -> None:
    model = f"tiny:{family}"
    engine = Engine(EngineConfig(model=model, threads=1))
    with TestClient(create_app(lean_settings(model=model), engine=engine), raise_server_exceptions=False) as client:
        assert client.get("/ready").json()["checks"]["model"]["family"] == family
        r = client.post("/v1/streams", json={"url": clip.as_uri(), "fps": 2, "method": "rekv"})
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        final = wait_stream(client, sid, lambda s: s["state"] == "ended", timeout=120.0)
        assert final["state"] == "ended" and final["last_error"] is None, final
        assert final["frames_encoded"] == final["frames_delivered"] == 6 and sum(final["memory_bytes"].values()) > 0

        r = client.post(f"/v1/streams/{sid}/questions", json={"question": "What is shown?", "max_tokens": 4})
        assert r.status_code == 200, r.text
        ans = r.json()
        assert 1 <= ans["tokens"] <= 4 and ans["finish_reason"] in ("stop", "length")
        assert ans["evidence"] and all(0 <= e["t_start"] <= e["t_end"] <= 3.0 for e in ans["evidence"])

        r = client.post(f"/v1/streams/{sid}/questions", json={"question": "And before 1 s?", "at": 1.0})
        assert r.status_code == 200 and all(e["t_end"] <= 1.0 for e in r.json()["evidence"])
        assert client.delete(f"/v1/streams/{sid}").status_code == 204
