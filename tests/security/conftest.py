"""Security test fixtures: apps with auth ON, a strict URL policy and known API keys."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from streamvqa.server.app import create_app
from streamvqa.server.auth import hash_key
from tests.server.conftest import (  # noqa: F401 - fixtures reused from the server tests
    clip,
    engine,
    free_port,
    http_server,
    lean_settings,
    media_dir,
    wait_stream,
    wait_until,
)
from tests.server.doubles import EngineDouble

ALICE = "svqa_alice-key-0123456789abcdefghijklmnop"
BOB = "svqa_bob-key-0123456789abcdefghijklmnopqrs"
METRICS = "svqa_metrics-key-0123456789abcdefghijklm"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def keys_json(**quotas: Any) -> str:
    """Alice (sha256, with ``quotas``) and Bob (salted PBKDF2), as the JSON keys format."""
    return json.dumps([
        {"name": "alice", "hash": hash_key(ALICE), **quotas},
        {"name": "bob", "hash": hash_key(BOB, "pbkdf2_sha256", iterations=1000)},
    ])


def secure_settings(media_root: Path, **overrides: Any):
    """Auth on (alice, bob), no private networks, files only under ``media_root``."""
    base: dict[str, Any] = dict(auth="on", api_keys=keys_json(), allow_private_networks=False,
                                media_root=str(media_root), open_timeout_s=2.0)
    base.update(overrides)
    return lean_settings(**base)


@pytest.fixture
def secure_client(tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """``secure_client(engine_override=None, **settings)`` -> an entered TestClient (EngineDouble by default)."""
    clients: list[TestClient] = []

    def make(engine_override: Any = None, **overrides: Any) -> TestClient:
        overrides.setdefault("media_root", tmp_path)
        app = create_app(secure_settings(**overrides), engine=engine_override or EngineDouble())
        c = TestClient(app, raise_server_exceptions=False)
        c.__enter__()
        clients.append(c)
        return c

    try:
        yield make
    finally:
        for c in clients:
            c.__exit__(None, None, None)


@pytest.fixture
def media(tmp_path: Path, clip: Path) -> Path:  # noqa: F811
    """The test's media root holding ``clip.mp4``."""
    (tmp_path / "clip.mp4").write_bytes(clip.read_bytes())
    return tmp_path


def error_code(r: Any) -> str:
    body = r.json()
    assert set(body) == {"error"}, body
    return body["error"]["code"]
