"""CORS: off by default; with ``cors_allow_origins``, preflights from an allowed origin are
answered without a key and real cross-origin requests carry the allow/expose headers."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from streamvqa.server.app import create_app
from streamvqa.server.main import BackgroundServer
from streamvqa.server.settings import ServerSettings
from tests.security.conftest import ALICE, bearer, secure_client, secure_settings  # noqa: F401 - fixture
from tests.server.doubles import EngineDouble

APP = "https://app.example"
EVIL = "https://evil.example"


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type"}


@pytest.fixture
def cors_server(tmp_path: Path):
    """A real uvicorn (auth on, engine double) allowing :data:`APP`."""
    settings = secure_settings(tmp_path, cors_allow_origins=[APP], host="127.0.0.1", port=0, log_level="warning")
    server = BackgroundServer(create_app(settings, engine=EngineDouble()), settings).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("path", ["/v1/streams", "/v1/chat/completions", "/v1/whip", "/v1/streams/s_x"])
def test_preflight_from_allowed_origin_needs_no_key(cors_server, path: str) -> None:
    r = httpx.options(cors_server.url + path, headers=preflight(APP), timeout=10)
    assert r.status_code == 204, r.text
    assert r.headers["access-control-allow-origin"] == APP and "Origin" in r.headers["vary"]
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in r.headers  # keys are bearer tokens, not cookies


def test_preflight_from_other_origin_gets_no_cors_headers(cors_server) -> None:
    r = httpx.options(cors_server.url + "/v1/streams", headers=preflight(EVIL), timeout=10)
    assert r.status_code == 401 and "access-control-allow-origin" not in r.headers


def test_cross_origin_request_carries_allow_and_expose_headers(cors_server) -> None:
    with httpx.Client(base_url=cors_server.url, timeout=10) as http:
        r = http.get("/v1/streams", headers={"Origin": APP, **bearer(ALICE)})
        assert r.status_code == 200 and r.json() == {"streams": []}
        assert r.headers["access-control-allow-origin"] == APP
        exposed = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
        assert {"location", "x-stream-id", "x-request-id", "retry-after"} <= exposed
        r = http.get("/v1/streams", headers={"Origin": APP})  # the browser may read why it failed
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == APP
        r = http.get("/v1/streams", headers={"Origin": EVIL, **bearer(ALICE)})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_no_cors_by_default(secure_client) -> None:  # noqa: F811
    c = secure_client()
    r = c.options("/v1/streams", headers=preflight(APP))
    assert r.status_code == 401 and "access-control-allow-origin" not in r.headers
    r = c.get("/v1/streams", headers={"Origin": APP, **bearer(ALICE)})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_plain_options_keeps_allow(secure_client) -> None:  # noqa: F811
    c = secure_client(cors_allow_origins=[APP])
    r = c.options("/v1/streams", headers={"Origin": APP, **bearer(ALICE)})  # not a preflight
    assert r.status_code == 204 and r.headers["allow"] == "GET, POST, OPTIONS"
    assert r.headers["access-control-allow-origin"] == APP


def test_wildcard_origin(secure_client) -> None:  # noqa: F811
    c = secure_client(cors_allow_origins=["*"])
    r = c.options("/v1/models", headers=preflight(EVIL, "GET"))
    assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "*"


def test_origins_setting_from_env() -> None:
    env = {"STREAMVQA_CORS_ALLOW_ORIGINS": "https://App.example, http://localhost:3000",
           "STREAMVQA_CORS_ALLOW_HEADERS": "Authorization,Content-Type,X-Stainless-Lang"}
    s = ServerSettings.from_env(env)
    assert s.cors_allow_origins == ["https://app.example", "http://localhost:3000"]
    assert s.cors_allow_headers == ["Authorization", "Content-Type", "X-Stainless-Lang"]
    assert ServerSettings.from_env({"STREAMVQA_CORS_ALLOW_ORIGINS": '["*"]'}).cors_allow_origins == ["*"]
    assert ServerSettings().cors_allow_origins == []
    for bad in ("https://app.example/", "app.example", "ftp://x.example", "https://a.example/path"):
        with pytest.raises(ValueError, match="cors_allow_origins"):
            ServerSettings.from_env({"STREAMVQA_CORS_ALLOW_ORIGINS": bad})
