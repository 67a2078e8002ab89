"""API keys: hashing, every endpoint but /health closed without one, ownership, quotas, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.routing import APIRoute

from streamvqa.proto import ERROR_STATUS
from streamvqa.server.auth import (
    Authenticator,
    check_hash_format,
    hash_key,
    load_keys,
    parse_keys,
    verify_key,
)
from streamvqa.server.main import check_serve_security
from streamvqa.server.settings import ServerSettings

from .conftest import ALICE, BOB, METRICS, bearer, error_code, keys_json

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "streamvqa.server.cli"]


def test_hashes_verify_and_never_store_the_key() -> None:
    for scheme in ("sha256", "pbkdf2_sha256"):
        stored = hash_key("s3cret-key", scheme) if scheme == "sha256" else hash_key("s3cret-key", scheme, 1000)
        assert "s3cret-key" not in stored
        check_hash_format(stored)
        assert verify_key("s3cret-key", stored)
        assert not verify_key("s3cret-kez", stored) and not verify_key("", stored)
    a, b = hash_key("k", "pbkdf2_sha256", 1000), hash_key("k", "pbkdf2_sha256", 1000)
    assert a != b  # salted
    for bad in ("plain-text-key", "sha256$zz", "md5$00", "pbkdf2_sha256$10$00$00"):
        with pytest.raises(ValueError):
            check_hash_format(bad)
        assert not verify_key("plain-text-key", bad)


def test_key_files_parse_and_reject_garbage(tmp_path: Path) -> None:
    h = hash_key(ALICE)
    keys = parse_keys(f"# comment\nalice:{h}\n\nbob:{hash_key(BOB)}\n")
    assert [k.name for k in keys] == ["alice", "bob"]
    assert parse_keys(f"alice:{h},bob:{hash_key(BOB)}")[1].name == "bob"
    assert parse_keys(json.dumps({"keys": [{"name": "a", "hash": h, "max_streams": 2}]}))[0].max_streams == 2
    for bad in (f"alice:{h}\nalice:{h}", "alice:plaintext", "alice", json.dumps([{"name": "a"}]),
                json.dumps([{"name": "a", "hash": h, "max_streams": -1}]),
                json.dumps([{"name": "a", "hash": h, "admin": True}])):
        with pytest.raises(ValueError):
            parse_keys(bad)
    f = tmp_path / "keys"
    f.write_text(f"alice:{h}\n")
    f.chmod(0o600)
    assert [k.name for k in load_keys(ServerSettings(api_keys_file=str(f)))] == ["alice"]
    with pytest.raises(ValueError, match="cannot read"):
        load_keys(ServerSettings(api_keys_file=str(tmp_path / "missing")))
    with pytest.raises(ValueError):
        load_keys(ServerSettings(api_keys_file=str(f), api_keys=f"alice:{h}"))  # duplicate name


def test_every_endpoint_but_health_needs_a_key(secure_client) -> None:
    client = secure_client()
    app = client.app
    checked = 0
    for route in app.routes:
        if not isinstance(route, APIRoute) or route.path == "/health":
            continue
        path = route.path.replace("{stream_id}", "s_0000")
        for method in route.methods:
            for headers in ({}, bearer("svqa_wrong"), {"Authorization": f"Basic {ALICE}"}):
                r = client.request(method, path, headers=headers)
                if route.path == "/ready":
                    assert r.status_code in (200, 503) and set(r.json()) == {"ready"}, r.text
                    continue
                assert r.status_code == 401, (method, path, r.status_code, r.text)
                assert error_code(r) == "unauthorized" and r.headers["www-authenticate"].startswith("Bearer")
                checked += 1
    assert checked >= 3 * 10  # every route but /health and /ready, three bad credentials each
    assert client.get("/v1/no-such-path").status_code == 401
    for path in ("/openapi.json", "/docs"):  # the API description is public (docs/security.md)
        assert client.get(path).status_code == 200
    assert client.get("/health").json() == {"status": "ok"}
    r = client.get("/ready", headers=bearer(ALICE))
    assert r.status_code == 200 and "checks" in r.json()
    assert client.get("/v1/streams", headers=bearer(ALICE)).status_code == 200
    assert client.get("/v1/streams", headers=bearer(BOB)).status_code == 200  # PBKDF2 key
    assert ERROR_STATUS["unauthorized"] == 401


def test_streams_belong_to_their_key(secure_client, media: Path) -> None:
    client = secure_client()
    r = client.post("/v1/streams", json={"url": "clip.mp4"}, headers=bearer(ALICE))
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    a, b = bearer(ALICE), bearer(BOB)
    assert [s["id"] for s in client.get("/v1/streams", headers=a).json()["streams"]] == [sid]
    assert client.get("/v1/streams", headers=b).json() == {"streams": []}
    for method, path, body in (("GET", f"/v1/streams/{sid}", None), ("DELETE", f"/v1/streams/{sid}", None),
                               ("POST", f"/v1/streams/{sid}/questions", {"question": "hi"}),
                               ("DELETE", f"/v1/whip/{sid}", None)):
        r = client.request(method, path, json=body, headers=b)
        assert r.status_code == 404 and error_code(r) == "unknown_stream", (method, path, r.text)
    with client.websocket_connect(f"/v1/streams/{sid}/ws", headers=b) as ws:
        msg = ws.receive_json()
        assert msg["type"] == "error" and msg["error"]["code"] == "unknown_stream"
    assert client.post(f"/v1/streams/{sid}/questions", json={"question": "hi"}, headers=a).status_code == 200
    assert client.delete(f"/v1/streams/{sid}", headers=a).status_code == 204


def test_per_key_quotas(secure_client, media: Path) -> None:
    client = secure_client(key_max_streams=1, key_questions_per_minute=3)
    a, b = bearer(ALICE), bearer(BOB)
    sid = client.post("/v1/streams", json={"url": "clip.mp4"}, headers=a).json()["id"]
    r = client.post("/v1/streams", json={"url": "clip.mp4"}, headers=a)
    assert r.status_code == 429 and error_code(r) == "quota_exceeded"
    assert client.post("/v1/streams", json={"url": "clip.mp4"}, headers=b).status_code == 201  # Bob's own quota
    q = f"/v1/streams/{sid}/questions"
    assert all(client.post(q, json={"question": "hi"}, headers=a).status_code == 200 for _ in range(3))
    r = client.post(q, json={"question": "hi"}, headers=a)
    assert r.status_code == 429 and error_code(r) == "rate_limited"
    with client.websocket_connect(f"/v1/streams/{sid}/ws", headers=a) as ws:  # the same budget over WS
        ws.send_json({"type": "question", "request_id": "1", "question": "hi"})
        msg = ws.receive_json()
        assert msg["type"] == "error" and msg["error"]["code"] == "rate_limited"


def test_memory_quota(secure_client, media: Path) -> None:
    client = secure_client(api_keys=keys_json(max_memory_bytes=1))  # the double holds 10 bytes per frame
    a = bearer(ALICE)
    sid = client.post("/v1/streams", json={"url": "clip.mp4"}, headers=a).json()["id"]
    assert wait_stream_memory(client, sid, a)
    r = client.post("/v1/streams", json={"url": "clip.mp4"}, headers=a)
    assert r.status_code == 429 and error_code(r) == "quota_exceeded" and "quota" in r.json()["error"]["message"]


def wait_stream_memory(client, sid: str, headers: dict) -> bool:
    from .conftest import wait_until

    return bool(wait_until(
        lambda: sum(client.get(f"/v1/streams/{sid}", headers=headers).json()["memory_bytes"].values()) > 0, 30))


def test_metrics_key(secure_client) -> None:
    client = secure_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=bearer(ALICE)).status_code == 200  # no metrics key: any API key
    client = secure_client(metrics_key_hash=hash_key(METRICS))
    assert client.get("/metrics", headers=bearer(ALICE)).status_code == 401
    assert client.get("/metrics", headers=bearer(METRICS)).status_code == 200
    assert client.get("/v1/streams", headers=bearer(METRICS)).status_code == 401  # scrape only
    client = secure_client(metrics_public=True)
    assert client.get("/metrics").status_code == 200
    assert client.get("/v1/streams").status_code == 401


def test_websocket_auth(secure_client, media: Path) -> None:
    client = secure_client()
    sid = client.post("/v1/streams", json={"url": "clip.mp4"}, headers=bearer(ALICE)).json()["id"]
    path = f"/v1/streams/{sid}/ws"
    for kwargs in ({}, {"headers": bearer("svqa_wrong")}, {"subprotocols": ["bearer.svqa_wrong"]}):
        with client.websocket_connect(path, **kwargs) as ws:
            msg = ws.receive_json()
            assert msg["error"]["code"] == "unauthorized"
            closed = ws.receive()
            assert closed["type"] == "websocket.close" and closed["code"] == 4401
    with client.websocket_connect(f"{path}?token=svqa_wrong") as ws:
        assert ws.receive_json()["error"]["code"] == "unauthorized"
    question = {"type": "question", "request_id": "q", "question": "hi"}
    for kwargs, url in (({"headers": bearer(ALICE)}, path), ({}, f"{path}?token={ALICE}"),
                        ({"subprotocols": ["streamvqa", f"bearer.{ALICE}"]}, path)):
        with client.websocket_connect(url, **kwargs) as ws:
            if "subprotocols" in kwargs:
                assert ws.accepted_subprotocol == "streamvqa"  # the key is never echoed
            ws.send_json(question)
            msgs = [ws.receive_json() for _ in range(4)]
            assert msgs[-1]["type"] == "answer", msgs


def test_whip_needs_a_key(secure_client) -> None:
    client = secure_client()
    r = client.post("/v1/whip", content=b"v=0\r\n", headers={"content-type": "application/sdp"})
    assert r.status_code == 401 and error_code(r) == "unauthorized"


def test_auth_off_only_when_asked() -> None:
    assert ServerSettings().auth == "on"
    with pytest.raises(ValueError, match="no API keys configured"):
        check_serve_security(ServerSettings())
    check_serve_security(ServerSettings(auth="off"))
    check_serve_security(ServerSettings(api_keys=f"alice:{hash_key(ALICE)}"))
    # auth on with no keys when embedded directly: closed, not open
    auth = Authenticator(ServerSettings())
    assert auth.enabled and auth.check(ALICE) is None and auth.check(None) is None


@pytest.mark.slow
def test_cli_serve_refuses_without_keys_and_makes_keys() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMVQA_")}
    env["PYTHONPATH"] = str(REPO)
    r = subprocess.run([*CLI, "serve", "--port", "0"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "no API keys configured" in r.stderr and "--insecure" in r.stderr, r.stderr
    r = subprocess.run([*CLI, "keys", "new", "--name", "ci"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    key = r.stdout.split("key:")[1].split()[0]
    stored = r.stdout.split("hash:")[1].split()[0]
    assert verify_key(key, stored) and f"ci:{stored}" in r.stderr
    r = subprocess.run([*CLI, "keys", "hash", "--pbkdf2", "-"], cwd=REPO, env=env, input="my key\n",
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and verify_key("my key", r.stdout.strip()), r.stderr


def test_demo_settings_turn_auth_off() -> None:
    import inspect

    from streamvqa.server import main

    src = inspect.getsource(main.demo)
    assert '"auth": "off"' in src and "AUTHENTICATION IS OFF" in src
