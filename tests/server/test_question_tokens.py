"""Questions are limited in the model's tokens, not only characters (emoji are ~3 tokens each)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamvqa.server.question_tokens import question_counter, utf8_bytes
from streamvqa.server.settings import ServerSettings
from tests.server.conftest import TINY, wait_stream
from tests.server.doubles import EngineDouble

EMOJI = "\U0001f388"  # 4 UTF-8 bytes


def _tokens(engine, text: str) -> int:
    return len(engine.adapter.tokenizer(text, add_special_tokens=False)["input_ids"])


def test_counter_is_the_models_tokenizer(engine) -> None:
    count = question_counter(engine.tokenizer(), TINY)
    for text in ("what is shown?", EMOJI * 50, "x" * 300):
        assert count(text) == _tokens(engine, text)
    # multi topology: the model is in worker processes; the server loads its tokenizer alone
    assert question_counter(None, TINY, multi=True)(EMOJI * 50) == _tokens(engine, EMOJI * 50)
    # no tokenizer (an engine double): UTF-8 bytes, an upper bound for byte-level BPE
    assert question_counter(EngineDouble().tokenizer(), TINY) is utf8_bytes and utf8_bytes(EMOJI * 3) == 12


def test_question_over_the_token_limit(make_client, engine, clip: Path) -> None:
    assert ServerSettings().max_question_tokens == 512
    client = make_client(max_question_chars=2000, max_question_tokens=64)
    sid = client.post("/v1/streams", json={"url": clip.as_uri()}).json()["id"]
    assert wait_stream(client, sid, lambda s: s["state"] == "ended")["frames_encoded"] > 0
    emoji = EMOJI * 40  # 40 characters, far under the character limit
    n = _tokens(engine, emoji)
    assert n > 64
    r = client.post(f"/v1/streams/{sid}/questions", json={"question": emoji})
    assert r.status_code == 413
    assert r.json()["error"] == {"code": "question_too_long", "message": f"question has {n} tokens; limit 64 tokens"}
    with client.websocket_connect(f"/v1/streams/{sid}/ws") as ws:
        ws.send_json({"type": "question", "request_id": "e", "question": emoji})
        m = ws.receive_json()
        assert m["request_id"] == "e" and m["error"]["code"] == "question_too_long"
    ok = "what is shown? " * 2
    assert _tokens(engine, ok) <= 64
    assert client.post(f"/v1/streams/{sid}/questions", json={"question": ok}).status_code == 200


@pytest.mark.slow
def test_default_limit_with_the_default_models_tokenizer() -> None:
    """The review's case: 2,000 emoji pass the 2,000-character limit but are ~6,000 SmolLM2
    tokens; the default token limit refuses them while 2,000 characters of English pass."""
    count = question_counter(None, "default", multi=True)
    limit = ServerSettings().max_question_tokens
    assert count(EMOJI * 2000) > 5 * limit
    assert count(("What is happening in the video right now? " * 50)[:2000]) <= limit
