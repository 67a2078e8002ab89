"""The OpenAI-compatible chat endpoint through the official ``openai`` client: a real uvicorn over
the real (tiny) engine for answers, streaming and not; auth, ownership and errors over the engine
double with API keys on."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from streamvqa.engine import EngineError
from streamvqa.engine.types import TokenEvent
from streamvqa.server.app import create_app
from streamvqa.server.main import BackgroundServer
from streamvqa.server.openai_compat import StopCut
from tests.security.conftest import ALICE, BOB, bearer, media, secure_client, secure_settings  # noqa: F401
from tests.server.doubles import EngineDouble

from .conftest import wait_stream, wait_until

Q = "What number is shown?"


def oai(base_url: str, key: str = "unused", http_client: httpx.Client | None = None) -> openai.OpenAI:
    # no retries: a 429 must surface, not be retried
    return openai.OpenAI(base_url=base_url, api_key=key, http_client=http_client, max_retries=0, timeout=60)


def user(text: Any) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


# -- answers: real uvicorn, real engine ----------------------------------------------------------


def test_chat_matches_rest_answer_streaming_and_not(live_server, clip: Path) -> None:
    with httpx.Client(base_url=live_server.url, timeout=60) as http:
        sid = http.post("/v1/streams", json={"url": clip.as_uri()}).json()["id"]
        assert wait_stream(http, sid, lambda s: s["state"] == "ended")["state"] == "ended"
        rest = http.post(f"/v1/streams/{sid}/questions", json={"question": Q, "max_tokens": 6}).json()
    client = oai(f"{live_server.url}/v1")
    model = f"stream:{sid}"
    assert model in [m.id for m in client.models.list().data]
    assert client.models.retrieve(model).id == model

    done = client.chat.completions.create(model=model, messages=user(Q), max_tokens=6, temperature=0)
    assert done.object == "chat.completion" and done.model == model and len(done.choices) == 1
    choice = done.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == rest["answer"]
    assert choice.finish_reason == rest["finish_reason"]
    assert done.usage.completion_tokens == rest["tokens"] and done.usage.prompt_tokens > 0
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    assert done.model_extra["evidence"] == rest["evidence"]

    chunks = list(client.chat.completions.create(
        model=model, messages=user([{"type": "text", "text": Q}]), max_completion_tokens=6, stream=True,
        stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == rest["answer"]
    last, usage = chunks[-2], chunks[-1]
    assert last.choices[0].finish_reason == rest["finish_reason"]
    assert last.model_extra["evidence"] == rest["evidence"]
    assert usage.choices == [] and usage.usage.completion_tokens == rest["tokens"]
    assert usage.usage.prompt_tokens == done.usage.prompt_tokens


def test_sse_wire_format(live_server, clip: Path) -> None:
    with httpx.Client(base_url=live_server.url, timeout=60) as http:
        sid = http.post("/v1/streams", json={"url": clip.as_uri()}).json()["id"]
        wait_stream(http, sid, lambda s: s["state"] == "ended")
        with http.stream("POST", "/v1/chat/completions", json={
                "model": f"stream:{sid}", "messages": user(Q), "max_tokens": 3, "stream": True}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            lines = [ln for ln in r.iter_lines() if ln]
    assert all(ln.startswith("data: ") for ln in lines) and lines[-1] == "data: [DONE]"
    assert '"usage"' not in "".join(lines)  # only with stream_options.include_usage


# -- auth, ownership, errors: engine double, keys on ------------------------------------------------


@pytest.fixture
def alice_stream(secure_client, media: Path) -> Callable[..., tuple[TestClient, str]]:  # noqa: F811
    """``alice_stream(**settings)`` -> a keyed app (EngineDouble) with one stream of Alice's."""

    def make(**settings: Any) -> tuple[TestClient, str]:
        c = secure_client(**settings)
        r = c.post("/v1/streams", json={"url": (media / "clip.mp4").as_uri()}, headers=bearer(ALICE))
        assert r.status_code == 201, r.text
        return c, r.json()["id"]

    return make


@pytest.fixture
def keyed(alice_stream) -> tuple[TestClient, str]:
    return alice_stream()


def as_(c: TestClient, key: str) -> openai.OpenAI:
    return oai("http://testserver/v1", key, http_client=c)


def test_models_are_the_callers_streams_only(keyed) -> None:
    c, sid = keyed
    assert [m.id for m in as_(c, ALICE).models.list().data] == [f"stream:{sid}"]
    assert as_(c, BOB).models.list().data == []
    with pytest.raises(openai.NotFoundError) as theirs:
        as_(c, BOB).models.retrieve(f"stream:{sid}")
    with pytest.raises(openai.NotFoundError) as nobody:
        as_(c, BOB).models.retrieve("stream:nope")
    assert theirs.value.code == nobody.value.code == "model_not_found"


def test_another_keys_stream_is_indistinguishable_from_none(keyed) -> None:
    c, sid = keyed
    bodies = []
    for model in (f"stream:{sid}", "stream:does-not-exist", "gpt-4o"):
        with pytest.raises(openai.NotFoundError) as e:
            as_(c, BOB).chat.completions.create(model=model, messages=user("hi"))
        assert e.value.status_code == 404 and e.value.code == "model_not_found" and e.value.param == "model"
        bodies.append(e.value.body["message"].replace(model, "M"))
    assert len(set(bodies)) == 1


def test_owner_gets_an_answer_and_evidence(keyed) -> None:
    c, sid = keyed
    # evidence carries source times once ingest has read the time base; both asks must see it
    assert wait_until(lambda: c.get(f"/v1/streams/{sid}", headers=bearer(ALICE)).json()["time_base"] is not None, 30)
    done = as_(c, ALICE).chat.completions.create(model=f"stream:{sid}", messages=user("hi"))
    assert done.choices[0].message.content == "done" and done.choices[0].finish_reason == "length"
    assert done.usage.completion_tokens == 3
    rest = c.post(f"/v1/streams/{sid}/questions", json={"question": "hi"}, headers=bearer(ALICE)).json()
    assert done.model_extra["evidence"] == rest["evidence"] and rest["evidence"][0]["t_start"] == 0.0


def test_missing_or_bad_key_is_401_in_openai_shape(keyed) -> None:
    c, sid = keyed
    with pytest.raises(openai.AuthenticationError) as e:
        as_(c, "svqa_wrong").chat.completions.create(model=f"stream:{sid}", messages=user("hi"))
    assert e.value.body == {"message": e.value.body["message"], "type": "authentication_error", "param": None,
                            "code": "unauthorized"}
    r = c.get("/v1/models")
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize(("extra", "messages", "param"), [
    ({"n": 2}, None, "n"),
    ({"max_tokens": 10_000}, None, "max_tokens"),
    ({"max_completion_tokens": 10_000}, None, "max_completion_tokens"),
    ({"temperature": 3}, None, "temperature"),
    ({"stop": ["a", "b", "c", "d", "e"]}, None, "stop"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, None, "tools"),
    ({}, [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "messages"),
    ({}, [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}],
     "messages[0].content"),
    ({}, [{"role": "user", "content": "   "}], "messages[0].content"),
    ({}, [], "messages"),
])
def test_bad_parameters_are_400_naming_the_param(keyed, extra: dict, messages: list | None, param: str) -> None:
    c, sid = keyed
    with pytest.raises(openai.BadRequestError) as e:
        as_(c, ALICE).chat.completions.create(model=f"stream:{sid}", messages=user("q") if messages is None
                                              else messages, **extra)
    assert e.value.status_code == 400 and e.value.param == param, e.value.body
    assert e.value.body["type"] == "invalid_request_error" and e.value.code == "invalid_request"


def test_malformed_json_and_oversized_body(alice_stream) -> None:
    c, _ = alice_stream(max_body_bytes=1024)
    r = c.post("/v1/chat/completions", content=b"{nope", headers={**bearer(ALICE), "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_json"
    r = c.post("/v1/chat/completions", json={"model": "x", "messages": user("q" * 2000)}, headers=bearer(ALICE))
    assert r.status_code == 413 and r.json()["error"] == {
        "message": r.json()["error"]["message"], "type": "invalid_request_error", "param": None,
        "code": "payload_too_large"}


def test_rate_limit_is_the_keys_question_rate(alice_stream) -> None:
    c, sid = alice_stream(key_questions_per_minute=1)
    assert c.post(f"/v1/streams/{sid}/questions", json={"question": "q"}, headers=bearer(ALICE)).status_code == 200
    with pytest.raises(openai.RateLimitError) as e:  # REST and chat draw on the same per-key budget
        as_(c, ALICE).chat.completions.create(model=f"stream:{sid}", messages=user("q"))
    assert e.value.code == "rate_limited" and e.value.body["type"] == "rate_limit_error"


def test_in_flight_cap_is_shared_with_rest(alice_stream) -> None:
    c, sid = alice_stream(max_questions_per_stream=1)
    c.app.state.server.streams.get(sid).active_questions = 1  # one question already in flight on the stream
    with pytest.raises(openai.RateLimitError) as e:
        as_(c, ALICE).chat.completions.create(model=f"stream:{sid}", messages=user("q"), stream=True)
    assert e.value.code == "too_many_questions"


def test_question_limits_are_the_rest_ones(alice_stream) -> None:
    c, sid = alice_stream(max_question_chars=10)
    with pytest.raises(openai.APIStatusError) as e:
        as_(c, ALICE).chat.completions.create(model=f"stream:{sid}", messages=user("x" * 11), stream=True)
    assert e.value.status_code == 413 and e.value.code == "question_too_long"


def test_stop_strings_cut_the_text(keyed) -> None:
    c, sid = keyed  # the double streams "t0 t1 t2 " and answers "done"
    client = as_(c, ALICE)
    chunks = list(client.chat.completions.create(model=f"stream:{sid}", messages=user("q"), stream=True,
                                                 stop=["t1", "zz"]))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "t0 "
    assert chunks[-1].choices[0].finish_reason == "stop"
    done = client.chat.completions.create(model=f"stream:{sid}", messages=user("q"), stop="n")
    assert done.choices[0].message.content == "do" and done.choices[0].finish_reason == "stop"


def test_engine_failure_before_first_token_is_an_http_error(keyed) -> None:
    c, sid = keyed
    c.app.state.server.engine.fail = RuntimeError("secret detail")
    with pytest.raises(openai.InternalServerError) as e:
        as_(c, ALICE).chat.completions.create(model=f"stream:{sid}", messages=user("q"), stream=True)
    assert e.value.code == "internal_error" and "secret" not in str(e.value.body)


def test_engine_failure_after_first_token_is_an_error_event(keyed) -> None:
    c, sid = keyed

    async def one_token_then_fail(question: str, **kwargs: Any) -> AsyncIterator[Any]:
        yield TokenEvent("t0", 0, 0)
        raise EngineError("store_unavailable", "every block is in a tier that is down")

    c.app.state.server.streams.get(sid).session.ask = one_token_then_fail
    got: list[str] = []
    with pytest.raises(openai.APIError) as e:
        for chunk in as_(c, ALICE).chat.completions.create(model=f"stream:{sid}", messages=user("q"), stream=True):
            got.append(chunk.choices[0].delta.content or "")
    assert "".join(got) == "t0" and e.value.code == "store_unavailable"
    assert c.app.state.server.streams.get(sid).active_questions == 0


def test_client_disconnect_ends_the_question(tmp_path: Path, clip: Path) -> None:
    settings = secure_settings(tmp_path, host="127.0.0.1", port=0, log_level="warning")
    (tmp_path / "clip.mp4").write_bytes(clip.read_bytes())
    server = BackgroundServer(create_app(settings, engine=EngineDouble()), settings).start()
    ended = threading.Event()

    async def endless(question: str, **kwargs: Any) -> AsyncIterator[Any]:
        try:
            for k in range(10_000):
                yield TokenEvent(f"t{k} ", k, k)
                await asyncio.sleep(0.01)
        finally:
            ended.set()

    try:
        with httpx.Client(base_url=server.url, headers=bearer(ALICE), timeout=30) as http:
            sid = http.post("/v1/streams", json={"url": (tmp_path / "clip.mp4").as_uri()}).json()["id"]
            entry = server.server.config.app.state.server.streams.get(sid)
            entry.session.ask = endless
            with http.stream("POST", "/v1/chat/completions", json={
                    "model": f"stream:{sid}", "messages": user("q"), "stream": True}) as r:
                assert r.status_code == 200
                next(r.iter_lines())  # the first chunk, then hang up
        assert ended.wait(30) and wait_until(lambda: entry.active_questions == 0)
    finally:
        server.stop()


@pytest.mark.parametrize("stops", [["t1"], ["1 t", "xyz"], ["t2 "], ["nope"]])
def test_stop_cut_matches_cutting_the_whole_text(stops: list[str]) -> None:
    pieces = ["t0 ", "t", "1 ", "t2", " "]
    whole = "".join(pieces)
    cut = StopCut(stops)
    streamed = "".join(cut.feed(p) for p in pieces) + cut.flush()
    ends = [i for i in (whole.find(s) for s in stops) if i >= 0]
    assert streamed == whole[: min(ends)] if ends else streamed == whole
    assert cut.hit == bool(ends)


def test_openapi_lists_the_chat_endpoint(keyed) -> None:
    c, _ = keyed
    paths: dict[str, Callable] = c.get("/openapi.json").json()["paths"]
    assert {"/v1/chat/completions", "/v1/models", "/v1/models/{model}"} <= set(paths)
    schema = paths["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "$ref" not in str(schema) and schema["properties"]["messages"]["items"]["required"] == ["role"]
