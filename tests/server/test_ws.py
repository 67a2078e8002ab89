"""The WebSocket: concurrent questions keyed by request id, typed errors, slow readers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

from streamvqa.server.ws import CLOSE_SLOW_READER, WsConnection

from .conftest import wait_stream
from .doubles import EngineDouble


def ended_stream(client: Any, clip: Path) -> str:
    sid = client.post("/v1/streams", json={"url": clip.as_uri()}).json()["id"]
    assert wait_stream(client, sid, lambda s: s["state"] == "ended")["state"] == "ended"
    return sid


def test_two_concurrent_questions_do_not_mix(live_server, clip: Path) -> None:
    import httpx

    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        sid = ended_stream(http, clip)
    url = live_server.url.replace("http://", "ws://") + f"/v1/streams/{sid}/ws"
    tokens: dict[str, list[dict]] = {"a": [], "b": []}
    answers: dict[str, dict] = {}
    with connect(url, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "question", "request_id": "a", "question": "What is shown?", "max_tokens": 12}))
        ws.send(json.dumps({"type": "question", "request_id": "b", "question": "Which number?", "max_tokens": 7}))
        for _ in range(200):
            msg = json.loads(ws.recv(timeout=60))
            assert msg["type"] in ("token", "answer"), msg
            if msg["type"] == "token":
                tokens[msg["request_id"]].append(msg)
            else:
                answers[msg["request_id"]] = msg
            if len(answers) == 2:
                break
    assert set(answers) == {"a", "b"}
    for rid, limit in (("a", 12), ("b", 7)):
        idx = [t["index"] for t in tokens[rid]]
        assert idx == list(range(len(idx))) and len(idx) == answers[rid]["tokens"] <= limit
        assert answers[rid]["evidence"] and answers[rid]["finish_reason"] in ("stop", "length")


def test_ws_errors(make_client, clip: Path) -> None:
    client = make_client(max_ws_message_bytes=1024, max_question_chars=40)
    sid = ended_stream(client, clip)
    with client.websocket_connect(f"/v1/streams/{sid}/ws") as ws:
        ws.send_text("{oops")
        assert ws.receive_json()["error"]["code"] == "malformed_json"
        ws.send_json({"type": "hello", "request_id": "x"})
        m = ws.receive_json()
        assert m == {"type": "error", "request_id": "x", "error": m["error"]} and m["error"]["code"] == "invalid_request"
        ws.send_json({"type": "question", "request_id": "q"})
        assert ws.receive_json()["error"]["code"] == "invalid_request"
        ws.send_json({"type": "question", "request_id": "big", "question": "x" * 2000})
        assert ws.receive_json()["error"]["code"] == "payload_too_large"
        ws.send_json({"type": "question", "request_id": "long", "question": "x" * 41})
        assert ws.receive_json() == {"type": "error", "request_id": "long",
                                     "error": {"code": "question_too_long", "message": "question has 41 characters; limit 40"}}
        # the connection still answers after all that
        ws.send_json({"type": "question", "request_id": "ok", "question": "fine?", "max_tokens": 2})
        for _ in range(10):
            m = ws.receive_json()
            assert m["request_id"] == "ok"
            if m["type"] == "answer":
                break
        assert m["type"] == "answer"
    with client.websocket_connect("/v1/streams/nope/ws") as ws:
        m = ws.receive_json()
        assert m["type"] == "error" and m["error"]["code"] == "unknown_stream"


def test_ws_too_many_questions_and_engine_failure(make_client, clip: Path) -> None:
    double = EngineDouble()
    client = make_client(engine_override=double, ws_max_concurrent_questions=1)
    sid = ended_stream(client, clip)
    double.gate.clear()  # the first question blocks inside the engine
    with client.websocket_connect(f"/v1/streams/{sid}/ws") as ws:
        ws.send_json({"type": "question", "request_id": "1", "question": "a"})
        ws.send_json({"type": "question", "request_id": "2", "question": "b"})
        m = ws.receive_json()
        assert m["request_id"] == "2" and m["error"]["code"] == "too_many_questions"
        double.gate.set()
        got = [ws.receive_json() for _ in range(4)]
        assert [m["type"] for m in got] == ["token", "token", "token", "answer"]
        assert {m["request_id"] for m in got} == {"1"}
        double.fail = RuntimeError("boom")
        ws.send_json({"type": "question", "request_id": "3", "question": "c"})
        m = ws.receive_json()
        assert m["request_id"] == "3" and m["error"]["code"] == "internal_error"
        assert "boom" not in m["error"]["message"] and m["error"]["request_id"]
    r = client.post(f"/v1/streams/{sid}/questions", json={"question": "c"})
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
    assert "boom" not in r.text and r.json()["error"]["request_id"] == r.headers["x-request-id"]


class BlockedWebSocket:
    """A WebSocket whose reader never reads: every send blocks."""

    def __init__(self, messages: list[dict]) -> None:
        self.incoming: asyncio.Queue[dict] = asyncio.Queue()
        for m in messages:
            self.incoming.put_nowait({"type": "websocket.receive", "text": json.dumps(m)})
        self.close_code: int | None = None

    async def accept(self) -> None:
        pass

    async def receive(self) -> dict:
        return await self.incoming.get()

    async def send_text(self, text: str) -> None:
        await asyncio.Event().wait()

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.close_code = code
        self.incoming.put_nowait({"type": "websocket.disconnect", "code": code})


async def test_slow_reader_does_not_block_others(make_client, clip: Path) -> None:
    client = make_client(ws_send_queue=4, ws_send_timeout_s=0.5)
    sid = await asyncio.to_thread(ended_stream, client, clip)
    state = client.app.state.server
    slow = BlockedWebSocket([{"type": "question", "request_id": "slow", "question": "tell me", "max_tokens": 48}])
    conn = WsConnection(slow, sid, state.streams, state.answers)
    task = asyncio.create_task(conn.run())
    # another client is served while the slow one's messages pile up
    r = await asyncio.to_thread(client.post, f"/v1/streams/{sid}/questions", json={"question": "hi", "max_tokens": 4})
    assert r.status_code == 200 and r.json()["tokens"] >= 1
    await asyncio.wait_for(task, 60)  # the server gives up on the slow reader and closes it
    assert slow.close_code == CLOSE_SLOW_READER
    assert conn.tokens_dropped > 0 and not conn.active
