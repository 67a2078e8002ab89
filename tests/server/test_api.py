"""API contract: every endpoint and error code, over the real engine and real ingest."""

from __future__ import annotations

from pathlib import Path

from streamvqa.proto import ERROR_STATUS, StreamInfo
from streamvqa.server.settings import ServerSettings

from .conftest import closed_port, wait_stream


def error_of(r) -> str:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert ERROR_STATUS.get(body["error"]["code"], 500) == r.status_code, (r.status_code, body)
    return body["error"]["code"]


def test_health_ready_openapi(client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    r = client.get("/ready")
    assert r.status_code == 200 and r.json()["ready"] is True
    assert r.json()["checks"]["model"]["family"] == "smolvlm"
    spec = client.get("/openapi.json").json()
    for path in ("/v1/streams", "/v1/streams/{stream_id}", "/v1/streams/{stream_id}/questions", "/v1/whip",
                 "/v1/whip/{stream_id}", "/metrics", "/health", "/ready"):
        assert path in spec["paths"], path
    assert "StreamInfo" in spec["components"]["schemas"] and "ErrorBody" in spec["components"]["schemas"]
    assert client.get("/v1/methods").json()["default"] == "rekv"


def test_file_stream_end_to_end(client, clip: Path) -> None:
    r = client.post("/v1/streams", json={"url": clip.as_uri(), "fps": 5, "name": "clip"})
    assert r.status_code == 201, r.text
    info = StreamInfo.model_validate(r.json())
    assert info.method == "rekv" and info.name == "clip" and info.fps == 5
    final = wait_stream(client, info.id, lambda s: s["state"] == "ended")
    assert final["state"] == "ended", final
    assert final["frames_decoded"] == 30 and final["frames_encoded"] == final["frames_delivered"] == 15
    assert final["memory_bytes"] and final["last_frame_t"] >= 2.5 and final["last_error"] is None
    assert [s["id"] for s in client.get("/v1/streams").json()["streams"]] == [info.id]

    r = client.post(f"/v1/streams/{info.id}/questions", json={"question": "What number is shown?", "max_tokens": 6})
    assert r.status_code == 200, r.text
    ans = r.json()
    assert 1 <= ans["tokens"] <= 6 and ans["finish_reason"] in ("stop", "length")
    assert ans["evidence"] and all(0 <= e["t_start"] <= e["t_end"] <= 3.0 for e in ans["evidence"])
    assert set(ans["timings"]) == {"queue_s", "retrieval_s", "prefill_s", "first_token_s", "total_s"}
    assert ans["timings"]["total_s"] >= ans["timings"]["first_token_s"] > 0

    r = client.post(f"/v1/streams/{info.id}/questions", json={"question": "And before 1 s?", "at": 1.0})
    assert r.status_code == 200 and all(e["t_end"] <= 1.0 for e in r.json()["evidence"])

    assert client.delete(f"/v1/streams/{info.id}").status_code == 204
    assert error_of(client.get(f"/v1/streams/{info.id}")) == "unknown_stream"
    assert client.get("/v1/streams").json() == {"streams": []}


def test_bad_requests(client, clip: Path) -> None:
    assert error_of(client.post("/v1/streams", content=b"{not json", headers={"content-type": "application/json"})) \
        == "malformed_json"
    assert error_of(client.post("/v1/streams", content=b"{not json")) == "malformed_json"
    assert error_of(client.post("/v1/streams", json={})) == "invalid_request"
    assert error_of(client.post("/v1/streams", json={"url": clip.as_uri(), "fps": -1})) == "invalid_request"
    assert error_of(client.post("/v1/streams", json={"url": clip.as_uri(), "bogus": 1})) == "invalid_request"
    assert error_of(client.post("/v1/streams", json={"url": "ftp://example/x"})) == "unsupported_scheme"
    assert error_of(client.post("/v1/streams", json={"url": "webrtc://x"})) == "unsupported_scheme"
    assert error_of(client.post("/v1/streams", json={"url": clip.as_uri(), "method": "nope"})) == "unknown_method"
    r = client.post("/v1/streams", json={"url": clip.as_uri(), "options": {"topk": "many"}})
    assert error_of(r) == "invalid_options"
    assert error_of(client.get("/v1/streams/nope")) == "unknown_stream"
    assert error_of(client.delete("/v1/streams/nope")) == "unknown_stream"
    assert error_of(client.post("/v1/streams/nope/questions", json={"question": "hi"})) == "unknown_stream"
    assert error_of(client.get("/v1/nothing-here")) == "not_found"
    assert error_of(client.put("/v1/streams")) == "method_not_allowed"
    assert client.get("/v1/streams").json() == {"streams": []}  # nothing was created


def test_question_limits(make_client, clip: Path) -> None:
    client = make_client(max_question_chars=50, max_tokens=16)
    sid = client.post("/v1/streams", json={"url": clip.as_uri()}).json()["id"]
    wait_stream(client, sid, lambda s: s["state"] == "ended")
    q = f"/v1/streams/{sid}/questions"
    assert error_of(client.post(q, json={"question": "x" * 51})) == "question_too_long"
    assert error_of(client.post(q, json={"question": "hi", "max_tokens": 17})) == "invalid_request"
    assert error_of(client.post(q, json={"question": ""})) == "invalid_request"
    assert error_of(client.post(q, json={"question": "   "})) == "invalid_request"
    assert error_of(client.post(q, json={"question": "hi", "top_p": 0})) == "invalid_request"
    assert error_of(client.post(q, json={"question": "hi", "max_tokens": 0})) == "invalid_request"
    assert client.post(q, json={"question": "x" * 50, "max_tokens": 16}).status_code == 200


def test_body_size_limit(make_client) -> None:
    client = make_client(max_body_bytes=2048)
    r = client.post("/v1/streams", json={"url": "file:///x", "name": "n" * 4000})
    assert r.status_code == 413 and error_of(r) == "payload_too_large"

    def chunks():  # no Content-Length: counted while it arrives
        for _ in range(8):
            yield b" " * 1024

    r = client.post("/v1/streams", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and error_of(r) == "payload_too_large"


def test_too_many_streams(make_client, clip: Path) -> None:
    client = make_client(max_streams=1, realtime_files=True)  # live (not ended) for the clip's 3 s
    assert client.post("/v1/streams", json={"url": clip.as_uri()}).status_code == 201
    assert error_of(client.post("/v1/streams", json={"url": clip.as_uri()})) == "too_many_streams"


def test_unreachable_source_fails_visibly(client) -> None:
    url = f"rtsp://127.0.0.1:{closed_port()}/nothing"
    r = client.post("/v1/streams", json={"url": url})
    assert r.status_code == 201  # asynchronous: the failure shows in GET
    info = wait_stream(client, r.json()["id"], lambda s: s["state"] == "failed")
    assert info["state"] == "failed" and info["last_error"]["code"] == "source_unreachable", info
    # a question on a stream that failed before encoding a frame: its failure, not "no frames yet"
    r = client.post(f"/v1/streams/{info['id']}/questions", json={"question": "anything?"})
    assert r.status_code == 409 and error_of(r) == "stream_failed"
    assert "source_unreachable" in r.json()["error"]["message"]
    # the same URL with a synchronous probe: an error right away, no stream created
    r = client.post("/v1/streams?probe=true", json={"url": url})
    assert error_of(r) == "source_unreachable"
    assert len(client.get("/v1/streams").json()["streams"]) == 1


def test_probe_accepts_a_good_source(client, clip: Path, tmp_path: Path) -> None:
    r = client.post("/v1/streams?probe=true", json={"url": clip.as_uri()})
    assert r.status_code == 201, r.text
    bad = tmp_path / "random.mp4"
    bad.write_bytes(bytes(range(256)) * 200)
    assert error_of(client.post("/v1/streams?probe=true", json={"url": str(bad)})) == "decode_error"
    missing = tmp_path / "missing.mp4"
    assert error_of(client.post("/v1/streams?probe=true", json={"url": missing.as_uri()})) == "source_unreachable"


def test_error_table_is_stable() -> None:
    expected = {
        "invalid_request": 422, "malformed_json": 400, "unknown_stream": 404, "unknown_method": 400,
        "unsupported_scheme": 400, "source_unreachable": 422, "question_too_long": 413,
        "too_many_streams": 429, "payload_too_large": 413, "empty_stream": 409, "internal_error": 500,
        "stream_failed": 409,
    }
    for code, status in expected.items():
        assert ERROR_STATUS[code] == status, code


def test_settings_from_env() -> None:
    s = ServerSettings.from_env({"STREAMVQA_PORT": "9001", "STREAMVQA_MAX_STREAMS": "3", "STREAMVQA_HOST": ""},
                                model="tiny:smolvlm")
    assert (s.port, s.max_streams, s.host, s.model) == (9001, 3, "127.0.0.1", "tiny:smolvlm")
    try:
        ServerSettings.from_env({"STREAMVQA_PORT": "port"})
    except ValueError as e:
        assert "port" in str(e) and "\n" not in str(e)
    else:
        raise AssertionError("a bad port was accepted")
