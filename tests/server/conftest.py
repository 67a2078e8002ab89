"""Server test fixtures: the real engine (tiny random SmolVLM), real H.264 clips, real servers.

Everything binds 127.0.0.1; every server started here is stopped in a ``finally``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from streamvqa.engine import Engine, EngineConfig
from streamvqa.server.app import create_app
from streamvqa.server.main import BackgroundServer
from streamvqa.server.settings import ServerSettings
from tests.helpers import wait_until  # noqa: F401 - shared polling helper, used by this package
from tests.ingest.conftest import (  # noqa: F401 - fixtures reused from the ingest tests
    closed_port,
    free_port,
    gst_rtsp,
    http_server,
    media_dir,
    rtsp_server_ctl,
)
from tests.ingest.media import write_index_mp4

TINY = "tiny:smolvlm"

@pytest.fixture(scope="session")
def engine() -> Engine:
    """One real engine for the whole session (tiny random model; loads in seconds)."""
    return Engine(EngineConfig(model=TINY, threads=1))

@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s, 10 fps, 160x120 H.264 MP4 written with PyAV (frame i shows i as bit-bars)."""
    path = tmp_path_factory.mktemp("server_media") / "clip.mp4"
    return write_index_mp4(path, seconds=3.0, fps=10, width=160, height=120)

def lean_settings(**overrides: Any) -> ServerSettings:
    """Lean settings for tests: files as fast as decoded, nothing dropped, short timeouts.

    Security is relaxed on purpose (tests/security checks it): no API keys, 127.0.0.1 sources
    allowed, file sources anywhere under the temporary directory pytest writes to.
    """
    base: dict[str, Any] = dict(
        model=TINY, realtime_files=False, ingest_queue_size=64, default_fps=5.0, open_timeout_s=5.0,
        read_timeout_s=5.0, max_retries=1, default_max_tokens=8, max_tokens=64,
        auth="off", allow_private_networks=True, media_root=tempfile.gettempdir(),
    )
    base.update(overrides)
    return ServerSettings(**base)


@pytest.fixture
def make_client(engine: Engine) -> Iterator[Callable[..., TestClient]]:
    """``make_client(**settings)`` -> an entered TestClient over the real engine (closed after)."""
    clients: list[TestClient] = []

    def make(engine_override: Any = None, **overrides: Any) -> TestClient:
        app = create_app(lean_settings(**overrides), engine=engine_override or engine)
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for c in clients:
            c.__exit__(None, None, None)

@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()

@pytest.fixture
def live_server(engine: Engine) -> Iterator[BackgroundServer]:
    """A real uvicorn on 127.0.0.1 (random port) in a thread, over the real engine."""
    settings = lean_settings(host="127.0.0.1", port=0, log_level="warning")
    server = BackgroundServer(create_app(settings, engine=engine), settings).start()
    try:
        yield server
    finally:
        server.stop()

def wait_stream(client: Any, sid: str, pred: Callable[[dict], bool], timeout: float = 30.0) -> dict:
    """Poll ``GET /v1/streams/{sid}`` until ``pred(info)``; returns the last info."""
    last: dict = {}

    def check() -> bool:
        nonlocal last
        last = client.get(f"/v1/streams/{sid}").json()
        return pred(last)

    wait_until(check, timeout)
    return last
