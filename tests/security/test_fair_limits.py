"""One key cannot starve the others: fair turns at the model, a cap on a key's questions in
flight, a default stream quota that counts only live streams (auth on, alice and bob)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamvqa.proto import ERROR_STATUS
from streamvqa.server.auth import hash_key
from streamvqa.server.settings import ServerSettings
from tests.server.doubles import EngineDouble
from tests.server.hanging import hanging  # noqa: F401 - fixture

from .conftest import ALICE, BOB, bearer, error_code, keys_json, wait_until

A, B = bearer(ALICE), bearer(BOB)


def _ended_stream(client, headers: dict[str, str]) -> str:
    r = client.post("/v1/streams", json={"url": "clip.mp4"}, headers=headers)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert wait_until(lambda: client.get(f"/v1/streams/{sid}", headers=headers).json()["state"] == "ended", 30)
    return sid


def _answers(ws, n_questions: int, n_tokens: int = 3) -> list[dict]:
    msgs = [ws.receive_json() for _ in range(n_questions * (n_tokens + 1))]
    return [m for m in msgs if m["type"] == "answer"]


def test_one_keys_backlog_does_not_starve_another_key(secure_client, media: Path) -> None:
    engine = EngineDouble()
    client = secure_client(engine_override=engine)
    sa, sb = _ended_stream(client, A), _ended_stream(client, B)
    queue = client.app.state.server.answers.queue
    engine.gate.clear()  # alice's first question holds the model
    with client.websocket_connect(f"/v1/streams/{sa}/ws", headers=A) as ws_a, \
            client.websocket_connect(f"/v1/streams/{sb}/ws", headers=B) as ws_b:
        for i in range(3):
            ws_a.send_json({"type": "question", "request_id": f"a{i}", "question": "long question"})
        assert wait_until(lambda: queue.running == 1 and queue.queued == 2, 10)
        ws_b.send_json({"type": "question", "request_id": "b0", "question": "short question"})
        assert wait_until(lambda: queue.queued == 3, 10)
        engine.gate.set()
        assert len(_answers(ws_a, 3)) == 3 and len(_answers(ws_b, 1)) == 1
    # bob's question went after the one question of alice's that held the model, before her backlog
    assert list(queue.order)[-4:] == ["alice", "bob", "alice", "alice"]


def test_questions_in_flight_per_key(secure_client, media: Path) -> None:
    engine = EngineDouble()
    client = secure_client(engine_override=engine, key_max_questions_in_flight=2)
    sa, sb = _ended_stream(client, A), _ended_stream(client, B)
    queue = client.app.state.server.answers.queue
    engine.gate.clear()
    with client.websocket_connect(f"/v1/streams/{sa}/ws", headers=A) as ws_a, \
            client.websocket_connect(f"/v1/streams/{sb}/ws", headers=B) as ws_b:
        for i in range(2):
            ws_a.send_json({"type": "question", "request_id": f"a{i}", "question": "hi"})
        assert wait_until(lambda: queue.in_flight("alice") == 2, 10)
        r = client.post(f"/v1/streams/{sa}/questions", json={"question": "hi"}, headers=A)
        assert r.status_code == 429 and error_code(r) == "too_many_questions", r.text
        assert int(r.headers["Retry-After"]) >= 1 and "per API key" in r.json()["error"]["message"]
        ws_a.send_json({"type": "question", "request_id": "a2", "question": "hi"})
        m = ws_a.receive_json()
        assert m["request_id"] == "a2" and m["error"]["code"] == "too_many_questions"
        ws_b.send_json({"type": "question", "request_id": "b0", "question": "hi"})  # bob has his own cap
        assert wait_until(lambda: queue.in_flight("bob") == 1, 10)
        engine.gate.set()
        assert len(_answers(ws_a, 2)) == 2 and len(_answers(ws_b, 1)) == 1
    assert queue.in_flight("alice") == queue.in_flight("bob") == 0
    assert client.post(f"/v1/streams/{sa}/questions", json={"question": "hi"}, headers=A).status_code == 200


def test_in_flight_cap_per_key_override(secure_client, media: Path) -> None:
    client = secure_client(api_keys=keys_json(max_questions_in_flight=1), key_max_questions_in_flight=3)
    auth = client.app.state.server.auth
    assert (auth.in_flight_cap("alice"), auth.in_flight_cap("bob")) == (1, 3)
    bad = json.dumps([{"name": "a", "hash": hash_key(ALICE), "max_questions_in_flight": 0}])
    with pytest.raises(ValueError, match="max_questions_in_flight"):
        secure_client(api_keys=bad)


def test_default_stream_quota_counts_live_streams(secure_client, media: Path, hanging) -> None:  # noqa: F811
    assert ServerSettings().key_max_streams == 4
    client = secure_client(allowed_networks="127.0.0.1/32", open_timeout_s=60.0, read_timeout_s=60.0)
    ended = _ended_stream(client, A)  # not live: does not count
    live = []
    for i in range(4):
        r = client.post("/v1/streams", json={"url": hanging.url(f"a{i}")}, headers=A)
        assert r.status_code == 201, r.text
        live.append(r.json()["id"])
    r = client.post("/v1/streams", json={"url": hanging.url("a4")}, headers=A)
    assert r.status_code == 429 and error_code(r) == "quota_exceeded" and "4 live streams" in r.text
    r = client.post("/v1/streams", json={"url": hanging.url("b0")}, headers=B)
    assert r.status_code == 201, r.text
    assert client.get(f"/v1/streams/{ended}", headers=A).status_code == 200  # kept until reaped
    assert [client.get(f"/v1/streams/{s}", headers=A).json()["state"] for s in live] == ["connecting"] * 4


def test_new_codes_are_stable() -> None:
    assert ERROR_STATUS["probe_timeout"] == 504 and ERROR_STATUS["too_many_questions"] == 429
