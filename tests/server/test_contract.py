"""The API contract: every error has a documented code and no internals, OPTIONS/405 list every
method of a path, the OpenAPI document declares the bearer scheme (and is public), bad sources are
refused at ``POST /v1/streams``, a failed stream's questions say so, a keyless ``/ready`` is bare."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from streamvqa.engine import EngineError
from streamvqa.proto import ERROR_STATUS
from streamvqa.server.app import create_app
from tests.security.conftest import ALICE, bearer, secure_settings

from .conftest import wait_stream, wait_until
from .doubles import EngineDouble


def error_of(r: Any) -> str:
    code = r.json()["error"]["code"]
    assert code in ERROR_STATUS and ERROR_STATUS[code] == r.status_code, (code, r.status_code, r.text)
    return code


def no_internals(r: Any, *secrets: str) -> None:
    for s in (tempfile.gettempdir(), "Traceback", *secrets):
        assert s not in r.text, (s, r.text)


def bad_clip(root: Path, name: str = "random.mp4") -> Path:
    path = root / name
    path.write_bytes(bytes(range(256)) * 200)
    return path


@pytest.fixture
def double_client(make_client) -> tuple[TestClient, EngineDouble]:
    double = EngineDouble()
    return make_client(engine_override=double), double


# -- 16: documented codes, no internals ----------------------------------------------------------


@pytest.mark.parametrize("body", [b'{"url": "\xff\xfe"}', b"[" * 5000 + b"]" * 5000, b'{"url": "a"' + b"}" * 3])
def test_unparseable_json_is_malformed_json(double_client, body: bytes) -> None:
    client, _ = double_client
    r = client.post("/v1/streams", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and error_of(r) == "malformed_json"


def test_ws_unparseable_messages_are_malformed_json(double_client, clip: Path) -> None:
    client, _ = double_client
    sid = client.post("/v1/streams", json={"url": clip.as_uri()}).json()["id"]
    with client.websocket_connect(f"/v1/streams/{sid}/ws") as ws:
        for raw in ("[" * 5000 + "]" * 5000, b"\xff\xfe", "{nope"):
            ws.send_bytes(raw) if isinstance(raw, bytes) else ws.send_text(raw)
            m = ws.receive_json()
            assert m["type"] == "error" and m["error"]["code"] == "malformed_json", m
        ws.send_json({"type": "question", "request_id": "q", "question": "still there?"})
        assert ws.receive_json()["request_id"] == "q"  # the connection stays


def test_unhandled_exception_is_internal_error_with_request_id(double_client, clip: Path) -> None:
    client, _ = double_client
    sid = client.post("/v1/streams", json={"url": clip.as_uri()}).json()["id"]

    async def crash(*_: Any) -> None:
        raise RuntimeError(f"secret detail {tempfile.gettempdir()}/x")

    client.app.state.server.answers.answer = crash
    r = client.post(f"/v1/streams/{sid}/questions", json={"question": "q"})
    assert r.status_code == 500 and error_of(r) == "internal_error"
    assert r.json()["error"]["message"] == "internal server error"
    assert r.json()["error"]["request_id"] == r.headers["x-request-id"] and len(r.headers["x-request-id"]) >= 8
    no_internals(r, "secret", "RuntimeError")


def test_undocumented_engine_code_is_internal_error(double_client, clip: Path) -> None:
    client, double = double_client
    sid = client.post("/v1/streams", json={"url": clip.as_uri()}).json()["id"]
    double.fail = EngineError("made_up_code", "detail /var/lib/x")
    r = client.post(f"/v1/streams/{sid}/questions", json={"question": "q"})
    assert error_of(r) == "internal_error" and r.json()["error"]["request_id"]
    no_internals(r, "made_up_code", "/var/lib/x")
    double.fail = RuntimeError("boom at /srv/models")  # a plain exception from the engine
    r = client.post(f"/v1/streams/{sid}/questions", json={"question": "q"})
    assert error_of(r) == "internal_error"
    no_internals(r, "boom", "/srv/models")


def test_server_side_errors_name_no_paths(double_client, clip: Path) -> None:
    client, double = double_client
    sid = client.post("/v1/streams", json={"url": clip.as_uri()}).json()["id"]
    double.fail = EngineError("worker_unavailable", "answer-0 is not reachable at /run/streamvqa/ans-0.sock")
    r = client.post(f"/v1/streams/{sid}/questions", json={"question": "q"})
    assert r.status_code == 503 and error_of(r) == "worker_unavailable"
    assert "answer-0 is not reachable at <path>" in r.json()["error"]["message"]
    no_internals(r, "/run/streamvqa")


def test_source_errors_name_paths_relative_to_the_media_root(client, tmp_path: Path) -> None:
    bad = bad_clip(tmp_path)
    r = client.post("/v1/streams?probe=true", json={"url": bad.as_uri()})
    assert error_of(r) == "decode_error"
    no_internals(r)
    sid = client.post("/v1/streams", json={"url": str(bad)}).json()["id"]
    info = wait_stream(client, sid, lambda s: s["state"] == "failed")
    assert info["last_error"]["code"] == "decode_error"
    assert str(tmp_path) not in info["last_error"]["message"]
    listed = client.get("/v1/streams").json()["streams"][0]["last_error"]["message"]
    assert str(tmp_path) not in listed and f"{tmp_path.name}/random.mp4" in listed  # relative to the media root


def test_every_http_error_code_is_documented(double_client) -> None:
    client, _ = double_client
    for r in (
        client.get("/v1/nowhere"),
        client.put("/v1/streams"),
        client.post("/v1/streams", json={"url": 1}),
        client.post("/v1/whip", content=b"v=0", headers={"content-type": "text/plain"}),
        client.patch("/v1/whip/w_1"),
    ):
        error_of(r)


# -- 17: OPTIONS / Allow, OpenAPI security, keyless docs, WHIP 415 --------------------------------


@pytest.mark.parametrize(("path", "methods"), [
    ("/v1/streams", {"GET", "POST"}),
    ("/v1/streams/s_1", {"GET", "DELETE"}),
    ("/v1/whip/w_1", {"DELETE"}),  # PATCH (trickle ICE) always answers 405
    ("/v1/whip", {"POST"}),
    ("/health", {"GET"}),
])
def test_options_and_405_list_every_method(double_client, path: str, methods: set[str]) -> None:
    client, _ = double_client
    r = client.options(path)
    assert r.status_code == 204
    assert {m.strip() for m in r.headers["allow"].split(",")} == methods | {"OPTIONS"}
    for method in ("PUT", "PATCH"):
        r = client.request(method, path)
        assert r.status_code == 405 and error_of(r) == "method_not_allowed"
        assert {m.strip() for m in r.headers["allow"].split(",")} == methods | {"OPTIONS"}


def secure_client(tmp_path: Path, **overrides: Any) -> TestClient:
    return TestClient(create_app(secure_settings(tmp_path, **overrides), engine=EngineDouble()),
                      raise_server_exceptions=False)


def test_openapi_declares_bearer_and_docs_need_no_key(tmp_path: Path) -> None:
    with secure_client(tmp_path) as client:
        r = client.get("/openapi.json")  # no key
        assert r.status_code == 200
        spec = r.json()
        assert spec["components"]["securitySchemes"]["bearerAuth"] == {
            "type": "http", "scheme": "bearer", "description": spec["components"]["securitySchemes"]["bearerAuth"][
                "description"]}
        for path, ops in spec["paths"].items():
            for method, op in ops.items():
                if path == "/health":
                    assert "security" not in op
                elif path == "/ready":
                    assert op["security"] == [{"bearerAuth": []}, {}]
                else:
                    assert op["security"] == [{"bearerAuth": []}], (method, path)
        docs = client.get("/docs")
        assert docs.status_code == 200 and "/openapi.json" in docs.text and "swagger" in docs.text.lower()
        # the docs are public, nothing else is
        assert client.get("/v1/streams").status_code == 401
        assert client.get("/v1/streams", headers=bearer(ALICE)).status_code == 200


def test_whip_415_is_documented(double_client) -> None:
    client, _ = double_client
    op = client.get("/openapi.json").json()["paths"]["/v1/whip"]["post"]
    assert "415" in op["responses"] and "application/sdp" in op["requestBody"]["content"]
    r = client.post("/v1/whip", content=b"v=0", headers={"content-type": "application/json"})
    assert r.status_code == 415 and error_of(r) == "unsupported_media_type"


# -- 19: refuse what is known at once; failed streams say so --------------------------------------


@pytest.mark.parametrize(("url", "code"), [
    ("missing.mp4", "source_unreachable"),
    ("file:///{root}/missing.mp4", "source_unreachable"),
    ("http://exa mple.com/v.mp4", "invalid_request"),
    ("rtsp://[::1/stream", "invalid_request"),
    ("rtsp://cam.example:99999/s", "invalid_request"),
    ("http://bad_host!/x", "invalid_request"),
    ("ftp://example.com/v.mp4", "unsupported_scheme"),
    ("webrtc://example.com/x", "unsupported_scheme"),
])
def test_create_refuses_bad_sources_at_once(client, url: str, code: str) -> None:
    r = client.post("/v1/streams", json={"url": url.format(root=tempfile.gettempdir().strip("/"))})
    assert 400 <= r.status_code < 500 and error_of(r) == code, r.text
    no_internals(r)
    assert client.get("/v1/streams").json()["streams"] == []


def test_missing_file_message_is_relative(client, tmp_path: Path) -> None:
    r = client.post("/v1/streams", json={"url": str(tmp_path / "gone.mp4")})
    assert error_of(r) == "source_unreachable"
    assert r.json()["error"]["message"].endswith(f"{tmp_path.name}/gone.mp4")
    no_internals(r)


def test_failed_stream_questions_get_stream_failed(client, tmp_path: Path) -> None:
    sid = client.post("/v1/streams", json={"url": str(bad_clip(tmp_path))}).json()["id"]
    wait_stream(client, sid, lambda s: s["state"] == "failed")
    r = client.post(f"/v1/streams/{sid}/questions", json={"question": "anything?"})
    assert r.status_code == 409 and error_of(r) == "stream_failed"
    assert "decode_error" in r.json()["error"]["message"]
    no_internals(r)
    with client.websocket_connect(f"/v1/streams/{sid}/ws") as ws:
        ws.send_json({"type": "question", "request_id": "q", "question": "anything?"})
        m = ws.receive_json()
    assert m["type"] == "error" and m["request_id"] == "q" and m["error"]["code"] == "stream_failed"
    assert tempfile.gettempdir() not in m["error"]["message"]


# -- 20: a keyless /ready is exactly {"ready": bool} ----------------------------------------------


def test_ready_without_key_is_bare_while_not_ready(tmp_path: Path) -> None:
    settings = secure_settings(tmp_path, model=str(tmp_path / "no-such-model"))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        state = client.app.state.server
        r = client.get("/ready")
        assert r.status_code == 503 and r.json() == {"ready": False}  # loading (or failed)
        assert wait_until(state.loaded.is_set, timeout=60)
        assert state.engine is None
        r = client.get("/ready")
        assert r.status_code == 503 and r.json() == {"ready": False}
        r = client.get("/ready", headers=bearer(ALICE))
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"
        assert str(tmp_path) not in r.text
        r = client.get("/v1/streams", headers=bearer(ALICE))
        assert error_of(r) == "not_ready"
        no_internals(r, str(tmp_path))
