"""Every limit answers with its stable error code (attack cases, auth on)."""

from __future__ import annotations

import time
from pathlib import Path

from streamvqa.proto import ERROR_STATUS
from streamvqa.server.limits import KeyedLimiter, TokenBucket
from tests.server.doubles import EngineDouble

from .conftest import ALICE, bearer, error_code, wait_until

A = bearer(ALICE)


def _stream(client) -> str:
    r = client.post("/v1/streams", json={"url": "clip.mp4"}, headers=A)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_request_limits(secure_client, media: Path) -> None:
    client = secure_client(max_body_bytes=4096, max_question_chars=100, max_tokens=16, max_streams=2,
                           realtime_files=True)  # streams stay live (only live ones count) for the clip's 3 s
    r = client.post("/v1/streams", json={"url": "clip.mp4", "name": "x" * 200, "options": {"k": "v" * 5000}},
                    headers=A)
    assert r.status_code == 413 and error_code(r) == "payload_too_large"
    r = client.post("/v1/streams", json={"url": "x" * 5000}, headers=A)
    assert error_code(r) == "payload_too_large"
    sid = _stream(client)
    q = f"/v1/streams/{sid}/questions"
    r = client.post(q, json={"question": "x" * 101}, headers=A)
    assert r.status_code == 413 and error_code(r) == "question_too_long"
    r = client.post(q, json={"question": "hi", "max_tokens": 10_000}, headers=A)
    assert r.status_code == 422 and error_code(r) == "invalid_request"
    _stream(client)
    r = client.post("/v1/streams", json={"url": "clip.mp4"}, headers=A)
    assert r.status_code == 429 and error_code(r) == "too_many_streams"


def test_websocket_size_and_rate(secure_client, media: Path) -> None:
    client = secure_client(max_ws_message_bytes=512, ws_messages_per_minute=3)
    sid = _stream(client)
    with client.websocket_connect(f"/v1/streams/{sid}/ws", headers=A) as ws:
        ws.send_text("x" * 1000)
        assert ws.receive_json()["error"]["code"] == "payload_too_large"
        ws.send_text("{")
        assert ws.receive_json()["error"]["code"] == "malformed_json"
        ws.send_json({"type": "question", "request_id": "1", "question": "hi"})
        assert ws.receive_json()["type"] == "token"
        msgs = [ws.receive_json() for _ in range(3)]
        assert msgs[-1]["type"] == "answer"
        ws.send_json({"type": "question", "request_id": "2", "question": "hi"})  # 4th message in a minute
        msg = ws.receive_json()
        assert msg["type"] == "error" and msg["error"]["code"] == "rate_limited"


def test_concurrent_questions_per_stream(secure_client, media: Path) -> None:
    engine = EngineDouble()
    client = secure_client(engine_override=engine, max_questions_per_stream=1, ws_max_concurrent_questions=8)
    sid = _stream(client)
    engine.gate.clear()  # the first question blocks in the engine
    with client.websocket_connect(f"/v1/streams/{sid}/ws", headers=A) as ws:
        ws.send_json({"type": "question", "request_id": "1", "question": "hi"})
        assert wait_until(lambda: client.app.state.server.streams.get(sid).active_questions == 1, 10)
        ws.send_json({"type": "question", "request_id": "2", "question": "hi"})
        msg = ws.receive_json()
        assert msg["request_id"] == "2" and msg["error"]["code"] == "too_many_questions"
        r = client.post(f"/v1/streams/{sid}/questions", json={"question": "hi"}, headers=A)
        assert r.status_code == 429 and error_code(r) == "too_many_questions"
        engine.gate.set()
        msgs = [ws.receive_json() for _ in range(4)]
        assert msgs[-1]["type"] == "answer" and msgs[-1]["request_id"] == "1"
    assert wait_until(lambda: client.app.state.server.streams.get(sid).active_questions == 0, 10)
    assert client.post(f"/v1/streams/{sid}/questions", json={"question": "hi"}, headers=A).status_code == 200


def test_decode_resolution_limit(secure_client, media: Path) -> None:
    client = secure_client(max_decode_width=128, max_decode_height=128)  # the clip is 160x120
    sid = _stream(client)
    assert wait_until(lambda: client.get(f"/v1/streams/{sid}", headers=A).json()["state"] == "failed", 30)
    info = client.get(f"/v1/streams/{sid}", headers=A).json()
    assert info["last_error"]["code"] == "resolution_too_large", info
    r = client.post("/v1/streams?probe=true", json={"url": "clip.mp4"}, headers=A)
    assert r.status_code == 422 and error_code(r) == "resolution_too_large"


def test_limit_codes_are_stable() -> None:
    expected = {"payload_too_large": 413, "question_too_long": 413, "too_many_streams": 429,
                "too_many_questions": 429, "rate_limited": 429, "quota_exceeded": 429,
                "resolution_too_large": 422, "unauthorized": 401, "url_forbidden": 403}
    assert {k: ERROR_STATUS[k] for k in expected} == expected


def test_token_bucket() -> None:
    now = [0.0]
    bucket = TokenBucket(60, clock=lambda: now[0])
    assert all(bucket.take() for _ in range(60)) and not bucket.take()
    now[0] += 1.0
    assert bucket.take() and not bucket.take()
    limiter = KeyedLimiter(clock=lambda: now[0])
    assert limiter.take("a", 1) and not limiter.take("a", 1) and limiter.take("b", 1)
    assert all(limiter.take("c", None) for _ in range(1000))
    assert time.monotonic() > 0
