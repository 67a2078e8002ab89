"""Console test fixtures: the server tests' real engine and clips, apps with auth on (two keys)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from streamvqa.server.app import create_app
from tests.security.conftest import ALICE, BOB, bearer, secure_settings  # noqa: F401
from tests.server.conftest import (  # noqa: F401 - fixtures reused from the server tests
    clip,
    engine,
    lean_settings,
    live_server,
    make_client,
    wait_stream,
    wait_until,
)


@pytest.fixture
def media(tmp_path: Path, clip: Path) -> Path:  # noqa: F811
    """A media root holding ``clip.mp4`` (3 s, 10 fps, 160x120)."""
    (tmp_path / "clip.mp4").write_bytes(clip.read_bytes())
    return tmp_path


@pytest.fixture
def keyed_client(engine: Any, media: Path) -> Iterator[Callable[..., TestClient]]:  # noqa: F811
    """``keyed_client(**settings)`` -> an entered TestClient over the real engine, auth on
    (keys ALICE, BOB), files under ``media``; closed after the test."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        overrides.setdefault("media_root", media)
        c = TestClient(create_app(secure_settings(**overrides), engine=engine), raise_server_exceptions=False)
        c.__enter__()
        clients.append(c)
        return c

    try:
        yield make
    finally:
        for c in clients:
            c.__exit__(None, None, None)
