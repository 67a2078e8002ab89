"""MCP at ``/mcp``: the official SDK's streamable HTTP client against a real uvicorn on 127.0.0.1.

Two API keys (alice, bob) over the real (tiny) engine: the tools reach the same registry,
answer path and ownership rules as REST; a wrong key is refused with 401 before any MCP traffic.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from streamvqa.engine import Engine, EngineConfig
from streamvqa.server.app import create_app
from streamvqa.server.auth import hash_key
from streamvqa.server.main import BackgroundServer
from tests.helpers import wait_until_async
from tests.server.conftest import lean_settings

ALICE, BOB = "svqa_alice_test_key", "svqa_bob_test_key"
TOOLS = {"list_streams", "add_stream", "get_stream", "ask_stream", "stream_evidence", "delete_stream", "list_methods"}


@contextmanager
def serve(engine: Engine, **overrides: Any) -> Iterator[BackgroundServer]:
    """A real uvicorn on 127.0.0.1 (ephemeral port) over the engine; stopped after."""
    settings = lean_settings(host="127.0.0.1", port=0, log_level="warning", **overrides)
    server = BackgroundServer(create_app(settings, engine=engine), settings).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mcp_server(engine: Engine) -> Iterator[BackgroundServer]:
    """Auth on, two keys; bob may ask one question per minute."""
    keys = [{"name": "alice", "hash": hash_key(ALICE)},
            {"name": "bob", "hash": hash_key(BOB), "questions_per_minute": 1}]
    with serve(engine, auth="on", api_keys=json.dumps(keys)) as server:
        yield server


@asynccontextmanager
async def connect(server: BackgroundServer, key: str, mode: str = "auto") -> AsyncIterator[Client]:
    """The SDK client over streamable HTTP with the key; ``mode``: the SDK's protocol negotiation
    ("auto": the 2026 stateless protocol, "legacy": the initialize handshake)."""
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
    transport = streamable_http_client(f"{server.url}/mcp", http_client=http)
    async with http, Client(transport, mode=mode) as client:
        yield client


async def call(client: Client, tool: str, **args: Any) -> Any:
    """The tool's structured result; fails the test on an error result."""
    r = await client.call_tool(tool, args)
    assert not r.is_error, r.content
    return r.structured_content


async def error_code(client: Client, tool: str, **args: Any) -> str:
    """The API error code in an error result's text (``{"error": {"code", "message"}}``)."""
    r = await client.call_tool(tool, args)
    assert r.is_error, r.structured_content
    return json.loads(r.content[0].text)["error"]["code"]


async def wait_ended(client: Client, sid: str, timeout: float = 60.0) -> dict:
    """Poll ``get_stream`` until the file's ingest ended (bounded); its last info."""
    last: dict = {}

    async def ended() -> dict | None:
        last.update(await call(client, "get_stream", stream_id=sid))
        return dict(last) if last["state"] in ("ended", "failed") else None

    return await wait_until_async(ended, timeout, 0.1) or dict(last)


@pytest.mark.slow
async def test_tools_add_ask_evidence_over_streamable_http(mcp_server: BackgroundServer, clip: Path) -> None:
    async with connect(mcp_server, ALICE) as alice:
        listed = await alice.list_tools()
        assert {t.name for t in listed.tools} == TOOLS
        assert (await call(alice, "list_streams")) == {"streams": []}

        info = await call(alice, "add_stream", url=clip.as_uri(), fps=5, method="rekv")
        sid = info["id"]
        assert (info["fps"], info["method"]) == (5.0, "rekv")
        assert await error_code(alice, "stream_evidence", stream_id=sid) == "not_found"  # nothing asked yet
        info = await wait_ended(alice, sid)
        assert info["state"] == "ended" and info["frames_encoded"] == 15, info  # 3 s at 5 fps

        # REST with the same key sees the same stream: one registry
        rest = httpx.get(f"{mcp_server.url}/v1/streams/{sid}", headers={"Authorization": f"Bearer {ALICE}"})
        assert rest.status_code == 200 and rest.json()["frames_encoded"] == 15

        answer = await call(alice, "ask_stream", stream_id=sid, question="What is shown?", max_tokens=2)
        assert isinstance(answer["answer"], str) and answer["tokens"] <= 2
        ev = answer["evidence"]
        assert ev and all(0.0 <= e["t_start"] < e["t_end"] <= 3.0 + 1e-9 for e in ev), ev

        last = await call(alice, "stream_evidence", stream_id=sid)
        assert last == {"question": "What is shown?", "answer": answer["answer"], "evidence": ev}
        fresh = await call(alice, "stream_evidence", stream_id=sid, question="What moves?", at=1.0)
        assert fresh["question"] == "What moves?" and fresh["evidence"]
        assert all(e["t_end"] <= 1.0 + 1e-9 for e in fresh["evidence"])  # `at` caps the ranges

        assert (await call(alice, "delete_stream", stream_id=sid)) == {"deleted": sid}
        assert await error_code(alice, "get_stream", stream_id=sid) == "unknown_stream"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_key_sees_and_asks_only_its_own_streams(mcp_server: BackgroundServer, clip: Path, mode: str) -> None:
    async with connect(mcp_server, ALICE, mode) as alice, connect(mcp_server, BOB, mode) as bob:
        sid = (await call(alice, "add_stream", url=clip.as_uri(), fps=5))["id"]
        assert (await call(bob, "list_streams")) == {"streams": []}
        for tool, args in (("get_stream", {}), ("ask_stream", {"question": "What is shown?"}),
                           ("stream_evidence", {}), ("stream_evidence", {"question": "What?"}),
                           ("delete_stream", {})):
            assert await error_code(bob, tool, stream_id=sid, **args) == "unknown_stream", tool
        assert [s["id"] for s in (await call(alice, "list_streams"))["streams"]] == [sid]
        await call(alice, "delete_stream", stream_id=sid)


def initialize(server: BackgroundServer, **headers: str) -> httpx.Response:
    """A raw MCP ``initialize`` POST (what any client sends first)."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
    return httpx.post(f"{server.url}/mcp", json=body, headers={
        "Accept": "application/json, text/event-stream", "Content-Type": "application/json", **headers})


async def test_a_wrong_or_missing_key_is_refused_before_any_mcp_traffic(mcp_server: BackgroundServer) -> None:
    for auth in ({"Authorization": "Bearer svqa_wrong"}, {}):
        r = initialize(mcp_server, **auth)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", r.text
        assert r.headers["www-authenticate"].startswith("Bearer")
    r = initialize(mcp_server, Authorization=f"Bearer {ALICE}")
    assert r.status_code == 200 and r.json()["result"]["serverInfo"]["name"] == "streamvqa", r.text
    for method in ("GET", "DELETE"):  # stateless: no event stream to hold open, no session to end
        r = httpx.request(method, f"{mcp_server.url}/mcp", headers={"Authorization": f"Bearer {ALICE}"})
        assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed", r.text
        assert r.headers["allow"] == "POST, OPTIONS"
    with pytest.raises(Exception):  # noqa: B017 - the SDK client fails to connect, whatever it raises
        async with connect(mcp_server, "svqa_wrong"):
            pass


async def test_tool_errors_carry_the_api_error_codes(mcp_server: BackgroundServer, tmp_path: Path) -> None:
    async with connect(mcp_server, ALICE) as alice:
        assert await error_code(alice, "add_stream", url="file:///etc/hostname") == "url_forbidden"
        assert await error_code(alice, "add_stream", url="gopher://x/") == "unsupported_scheme"
        assert await error_code(alice, "add_stream", url=(tmp_path / "missing.mp4").as_uri()) == "source_unreachable"
        assert await error_code(alice, "add_stream", url=(tmp_path / "a.mp4").as_uri(), fps=0) == "invalid_request"
        assert await error_code(alice, "get_stream", stream_id="nope") == "unknown_stream"
        assert await error_code(alice, "ask_stream", stream_id="nope", question="Hi?") == "unknown_stream"
        r = await alice.call_tool("add_stream", {"url": (tmp_path / "missing.mp4").as_uri()})
        assert "missing.mp4" in r.content[0].text and str(tmp_path) not in r.content[0].text  # no server paths
        # arguments outside the input schema: as REST's bad body, field and reason, not the value
        r = await alice.call_tool("add_stream", {"url": "rtsp://x/", "fps": "fast-please"})
        body = json.loads(r.content[0].text)
        assert r.is_error and body["error"]["code"] == "invalid_request" and "fps" in body["error"]["message"]
        assert "fast-please" not in r.content[0].text
        assert await error_code(alice, "ask_stream", stream_id="nope") == "invalid_request"  # no question


async def test_a_crash_is_an_internal_error_with_an_id_and_no_detail(
    mcp_server: BackgroundServer, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> list[str]:
        raise RuntimeError("secret detail at /srv/models")

    monkeypatch.setattr(engine, "methods", broken)
    async with connect(mcp_server, ALICE) as alice:
        r = await alice.call_tool("list_methods", {})
    err = json.loads(r.content[0].text)["error"]
    assert r.is_error and err["code"] == "internal_error" and len(err["request_id"]) == 16, err
    assert "secret" not in r.content[0].text and "/srv" not in r.content[0].text




def test_host_check_guards_keyless_loopback_only(mcp_server: BackgroundServer, engine: Engine) -> None:
    # keys on: the key is the check, so a reverse proxy's Host header is served (as for REST)
    assert initialize(mcp_server, Authorization=f"Bearer {ALICE}", Host="vqa.example.com").status_code == 200
    # no keys on a loopback bind: a DNS-rebinding page (foreign Host) is refused, local clients served
    with serve(engine, auth="off") as open_server:
        assert initialize(open_server, Host="evil.example.com").status_code == 421
        assert initialize(open_server).status_code == 200


@pytest.mark.slow
async def test_questions_count_against_the_keys_rate_like_rest(mcp_server: BackgroundServer, clip: Path) -> None:
    async with connect(mcp_server, BOB) as bob:
        sid = (await call(bob, "add_stream", url=clip.as_uri(), fps=5))["id"]
        await wait_ended(bob, sid)
        await call(bob, "ask_stream", stream_id=sid, question="What is shown?", max_tokens=1)
        assert await error_code(bob, "ask_stream", stream_id=sid, question="And now?") == "rate_limited"
        rest = httpx.post(f"{mcp_server.url}/v1/streams/{sid}/questions", json={"question": "Hi?"},
                          headers={"Authorization": f"Bearer {BOB}"})
        assert rest.status_code == 429 and rest.json()["error"]["code"] == "rate_limited"  # one budget
        await call(bob, "delete_stream", stream_id=sid)


@pytest.fixture(scope="module")
def default_engine() -> Engine:
    """The real default model (SmolLM2 + its vision tower), as `streamvqa serve` runs it."""
    return Engine(EngineConfig(model="default", threads=1))


@pytest.mark.slow
async def test_the_default_model_answers_over_mcp_exactly_as_over_rest(default_engine: Engine, clip: Path) -> None:
    keys = json.dumps([{"name": "alice", "hash": hash_key(ALICE)}])
    question = {"question": "What do you see?", "max_tokens": 8}
    with serve(default_engine, auth="on", api_keys=keys) as server:
        async with connect(server, ALICE) as alice:
            sid = (await call(alice, "add_stream", url=clip.as_uri(), fps=2))["id"]
            assert (await wait_ended(alice, sid, timeout=240))["state"] == "ended"
            mcp = await call(alice, "ask_stream", stream_id=sid, **question)
            rest = httpx.post(f"{server.url}/v1/streams/{sid}/questions", timeout=300,
                              json=question,
                              headers={"Authorization": f"Bearer {ALICE}"}).json()
            assert mcp["answer"].strip() and mcp["tokens"] > 0
            assert (mcp["answer"], mcp["tokens"], mcp["evidence"]) == (rest["answer"], rest["tokens"], rest["evidence"])
            await call(alice, "delete_stream", stream_id=sid)


async def test_a_tool_call_without_the_middlewares_caller_is_refused_not_anonymous(engine: Engine) -> None:
    # in process, no HTTP request and so no principal: with auth on that must not mean "every stream"
    app = create_app(lean_settings(auth="on", api_keys=f"alice:{hash_key(ALICE)}"), engine=engine)
    async with app.router.lifespan_context(app), Client(app.state.mcp.server) as client:
        for tool, args in (("list_streams", {}), ("get_stream", {"stream_id": "s"}),
                           ("add_stream", {"url": "rtsp://127.0.0.1/x"})):
            assert await error_code(client, tool, **args) == "unauthorized", tool
