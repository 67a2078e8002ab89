"""Real-benchmark replay: scoring, the judge client against a chat-completions test double, and
end-to-end replays against a real in-process server (tiny random SmolVLM, auth off) streaming
short H.264 MP4s written here.

Every server started here binds 127.0.0.1 and is stopped in a ``finally`` / context exit.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.__main__ import main as bench_main
from bench.datasets import load
from bench.replay import (
    Judge,
    JudgeConfig,
    ReplayConfig,
    choice_of,
    embedded_server,
    number_of,
    parse_verdict,
    prompt,
    run,
    score_row,
    yes_no_of,
)
from streamvqa.synth.streams import random_stream, write_stream

TINY = "tiny:smolvlm"
FPS = 4.0

# ------------------------------------------------------------------------------------ scoring


@pytest.mark.parametrize("text, expected", [
    ("B", "B"), ("(C) a pen", "C"), ("D.", "D"), ("Answer: A", "A"), ("The answer is (B).", "B"),
    ("best option: c", "C"), ("b", "B"), ("The answer is a book", "B"), ("A man walks", None),
    ("a book", "B"),              # the option's text, not "option A"
    ("I think it is a book.", "B"),  # contains exactly one option's text
    ("E", None),                  # not an option
    ("a cup or a book", None),    # two options named
    ("no idea", None),
])
def test_choice_of(text, expected):
    assert choice_of(text, ("a cup", "a book", "a pen", "nothing")) == expected


def test_yes_no_and_numbers():
    assert yes_no_of("Yes, he is.") == "yes" and yes_no_of("no") == "no" and yes_no_of("maybe") is None
    assert number_of("They jumped 3 times") == 3 and number_of("three") == 3 and number_of("none") is None


@pytest.mark.parametrize("reply, correct, score", [
    ('{"pred": "yes", "score": 4}', True, 4.0),
    ("{'pred': 'no', 'score': 1}", False, 1.0),          # a Python dict literal, as some judges answer
    ('Sure: {"pred": "yes", "score": 5} done', True, 5.0),
    ("no, score 2", False, 2.0),
])
def test_parse_verdict(reply, correct, score):
    v = parse_verdict(reply)
    assert (v.correct, v.score) == (correct, score)


def test_parse_verdict_rejects_noise():
    with pytest.raises(ValueError):
        parse_verdict("cannot tell")


def test_score_row_by_kind():
    from bench.datasets import BenchQuestion

    mc = BenchQuestion(id="1", dataset="d", video="v", question="Q", kind="multiple_choice", task="t",
                       answer="B", options=("red", "blue"))
    row = {"prediction": "(B) blue"}
    score_row(mc, row, None)
    assert row["correct"] is True and row["chosen"] == "B"
    cnt = BenchQuestion(id="2", dataset="d", video="v", question="Q", kind="count", task="REC", answer="3")
    row = {"prediction": "2"}
    score_row(cnt, row, None)
    assert row["correct"] is False and row["chosen"] == "2"
    op = BenchQuestion(id="3", dataset="d", video="v", question="Q", kind="open", task="t", answer="x")
    row = {"prediction": "x"}
    score_row(op, row, None)
    assert row["correct"] is None  # no judge: unscored, not wrong
    unknown = BenchQuestion(id="4", dataset="d", video="v", question="Q", kind="multiple_choice", task="t",
                            answer=None, options=("a", "b"))
    row = {"prediction": "A"}
    score_row(unknown, row, None)
    assert row["correct"] is None  # no ground truth
    assert "(A) a\n(B) b" in prompt(unknown)


# ------------------------------------------------------------------------------------ judge double


class ChatCompletionsDouble:
    """A tiny real HTTP server on 127.0.0.1 that speaks the chat-completions shape (a test double
    of an external judge). ``reply(request_json) -> content``; ``fail_first`` 500s first."""

    def __init__(self, reply: Callable[[dict], str], fail_first: int = 0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_left = fail_first
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                double.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                if self.path != "/v1/chat/completions":
                    self.send_response(404)
                    self.end_headers()
                    return
                if double.fail_left > 0:
                    double.fail_left -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                out = json.dumps({"id": "x", "object": "chat.completion", "model": body["model"], "choices": [
                    {"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": reply(body)}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ChatCompletionsDouble:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def predicted(body: dict) -> str:
    """The predicted answer as the judge prompt carries it."""
    user = body["messages"][-1]["content"]
    return user.split("Predicted answer: ", 1)[1].split("\n", 1)[0]


def test_judge_request_and_verdict():
    with ChatCompletionsDouble(lambda b: '{"pred": "yes", "score": 4}', fail_first=1) as double:
        judge = Judge(JudgeConfig(url=double.url, model="judge-1", api_key="sk-test", retries=2))
        try:
            v = judge("What did I cut?", "an onion", "onion")
        finally:
            judge.close()
    assert v.correct is True and v.score == 4.0
    assert len(double.requests) == 2  # the 500 was retried
    req = double.requests[-1]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-test"
    body = req["body"]
    assert body["model"] == "judge-1" and body["temperature"] == 0
    assert body["messages"][0]["role"] == "system"
    user = body["messages"][1]["content"]
    assert "Question: What did I cut?" in user and "Correct answer: an onion" in user
    assert predicted(body) == "onion" and '"pred"' in user and '"score"' in user


def test_judge_gives_up_on_client_errors():
    with ChatCompletionsDouble(lambda b: "unused") as double:
        judge = Judge(JudgeConfig(url=double.url.replace("/v1", "/nowhere"), model="m", retries=3))
        try:
            with pytest.raises(RuntimeError, match="judge request failed"):
                judge("q", "a", "p")
        finally:
            judge.close()
    assert len(double.requests) == 1  # a 404 is not retried


def test_judge_config_from_env(monkeypatch):
    monkeypatch.delenv("STREAMVQA_JUDGE_URL", raising=False)
    assert JudgeConfig.from_env() is None
    monkeypatch.setenv("STREAMVQA_JUDGE_URL", "http://127.0.0.1:9/v1/")
    monkeypatch.setenv("STREAMVQA_JUDGE_MODEL", "m2")
    monkeypatch.setenv("STREAMVQA_JUDGE_API_KEY", "k")
    cfg = JudgeConfig.from_env()
    assert cfg.endpoint == "http://127.0.0.1:9/v1/chat/completions" and cfg.model == "m2" and cfg.api_key == "k"
    assert "k" not in repr(cfg)  # keys stay out of logs


# ------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 3-second 128x128 H.264 MP4s at 4 fps (synthetic scenes)."""
    root = tmp_path_factory.mktemp("bench_media")
    for seed, name in ((11, "clip_a.mp4"), (12, "clip_b.mp4")):
        write_stream(random_stream(seed, minutes=3.0 / 60, fps=FPS, n_objects=1, n_digits=1), root / name)
    return root


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    from streamvqa.engine import Engine, EngineConfig

    eng = Engine(EngineConfig(model=TINY, threads=1))
    try:
        yield eng
    finally:
        eng.close()


def streamingbench_file(media: Path) -> Path:
    path = media / "questions_real.json"
    path.write_text(json.dumps([
        {"video_path": "./videos/clip_a.mp4", "video_categories": "synthetic", "questions": [
            # listed out of order on purpose: the replay asks in timestamp order
            {"task_type": "Object Perception", "question": "What shape is shown?", "time_stamp": "00:00:02",
             "answer": "A", "options": ["A. circle", "B. square", "C. star", "D. triangle"]},
            {"task_type": "Counting", "question": "How many objects are there?", "time_stamp": "00:00:01",
             "answer": "B", "options": ["A. 0", "B. 1", "C. 2", "D. 3"]},
        ]},
    ]))
    return path


def rvs_file(media: Path) -> Path:
    path = media / "test_qa_ego4d.json"
    path.write_text(json.dumps([
        {"id": "clip_b", "video_id": "clip_b", "question": "What happened?", "answer": "a shape appeared",
         "answer_type": "event", "start_time": 0.0, "end_time": 1.5},
    ]))
    return path


def test_replay_end_to_end_with_judge(media, engine):
    questions = load("streamingbench", streamingbench_file(media)) + load("rvs-ego", rvs_file(media))

    def reply(body: dict) -> str:
        # deterministic and dependent on what the server answered: the test can check the mapping
        ok = len(predicted(body)) % 2 == 0
        return json.dumps({"pred": "yes" if ok else "no", "score": 3 if ok else 1})

    with ChatCompletionsDouble(reply) as double, \
            embedded_server(TINY, media, realtime=True, engine=engine, load_timeout_s=60) as url:
        judge = Judge(JudgeConfig(url=double.url, model="judge-1"))
        # both videos at once: two live streams on one server
        cfg = ReplayConfig(server=url, videos_dir=media, fps=FPS, method="rekv", max_tokens=4,
                           stall_timeout_s=30, request_timeout_s=60, concurrency=2)
        try:
            result = run(questions, cfg, judge)
        finally:
            judge.close()
        with httpx.Client(base_url=url, timeout=10) as http:
            left = http.get("/v1/streams").json()["streams"]
    assert left == []  # every replayed stream was deleted

    rows = {r["id"]: r for r in result["rows"]}
    assert len(rows) == 3 and result["videos"] == 2 and result["concurrency"] == 2
    assert len({r["stream"]["id"] for r in rows.values()}) == 2  # one stream per video
    for r in rows.values():
        assert r["error"] is None, r["error"]
        assert isinstance(r["prediction"], str) and r["latency_s"] > 0
        # the stream is deleted after its last question, whether or not the video has ended
        assert r["stream"]["fps"] == FPS and r["stream"]["state"] in ("running", "ended")
        # asked once the stream had reached the timestamp, answered from frames up to it only
        assert r["stream_t_at_ask"] >= r["ask_at"]
        assert r["evidence"] and all(t_end <= r["ask_at"] + 1e-6 for _, t_end in r["evidence"])
    sb = [r for r in result["rows"] if r["kind"] == "multiple_choice"]
    assert [r["ask_at"] for r in sb] == [1.0, 2.0]  # timestamp order, not file order
    assert sb[0]["asked_wall_s"] <= sb[1]["asked_wall_s"]
    for r in sb:
        assert r["correct"] == (choice_of(r["prediction"], tuple(r["options"])) == r["answer"])
    (oe,) = [r for r in result["rows"] if r["kind"] == "open"]
    even = len(oe["prediction"]) % 2 == 0
    assert oe["correct"] is even and oe["judge_score"] == (3.0 if even else 1.0)
    # the judge saw exactly the server's answer
    (jreq,) = double.requests
    assert predicted(jreq["body"]) == oe["prediction"] and "Correct answer: a shape appeared" in \
        jreq["body"]["messages"][1]["content"]

    s = result["summary"]
    assert s["n"] == 3 and s["scored"] == 3 and s["errors"] == 0
    assert s["correct"] == sum(bool(r["correct"]) for r in result["rows"])
    assert set(s["per_task"]) == {"Object Perception", "Counting", "event"}
    assert set(s["per_kind"]) == {"multiple_choice", "open"} and s["per_kind"]["open"]["scored"] == 1
    assert s["latency_s"]["mean"] > 0 and s["judge_mean_score"] in (1.0, 3.0)
    assert result["judge"] == {"url": double.url + "/chat/completions", "model": "judge-1"}
    json.dumps(result)  # JSON-able as is


def test_replay_reports_missing_videos_and_source_errors(media, engine):
    qs = load("streamingbench", streamingbench_file(media))
    (media / "broken.mp4").write_bytes(b"not a video at all" * 64)
    bad = [dataclasses.replace(qs[0], video="nope.mp4"), dataclasses.replace(qs[1], video="broken.mp4")]
    with embedded_server(TINY, media, engine=engine, load_timeout_s=60) as url:
        result = run(bad, ReplayConfig(server=url, videos_dir=media, fps=FPS, stall_timeout_s=30))
    missing, broken = result["rows"]
    assert missing["error"]["code"] == "video_not_found" and missing["correct"] is None
    # the server accepts the stream, ingest fails, the question gets the stream's failure
    assert broken["stream_state_at_ask"] == "failed" and broken["stream"]["last_error"]["code"]
    assert broken["error"]["code"] == "stream_failed" and broken["prediction"] is None and broken["correct"] is None
    assert result["summary"]["errors"] == 2 and result["summary"]["accuracy"] is None


def test_cli_embedded_mlvu_json(media, tmp_path, capsys):
    qfile = tmp_path / "4_count.json"
    qfile.write_text(json.dumps([
        {"video": "clip_a.mp4", "duration": 3, "question": "How many digits were shown?",
         "candidates": ["0", "1", "2"], "answer": "1"},
        {"video": "clip_b.mp4", "duration": 3, "question": "Was there a digit?", "candidates": ["yes", "no"],
         "answer": "yes", "question_type": "needle"},
    ]))
    out = tmp_path / "out" / "mlvu.json"
    code = bench_main(["real", "--dataset", "mlvu", "--questions", str(qfile), "--videos", str(media),
                       "--embedded", "--model", TINY, "--fast", "--fps", "native", "--max-tokens", "4",
                       "--method", "sliding-window", "--json", str(out), "--quiet"])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["dataset"] == "mlvu" and result["method"] == "sliding-window" and result["fps"] == "native"
    assert result["server"].startswith("embedded")
    rows = result["rows"]
    assert [r["task"] for r in rows] == ["count", "needle"]  # task from the file name, else question_type
    for r in rows:
        assert r["error"] is None and r["ask_at"] is None and r["stream_state_at_ask"] == "ended"
        assert r["stream"]["fps"] == FPS  # native: the MP4's own rate
        assert isinstance(r["correct"], bool)
    assert result["summary"]["scored"] == 2
    printed = capsys.readouterr().out
    assert "| **all** | 2 | 2 |" in printed and f"wrote {out}" in printed


def test_cli_rejects_bad_input(tmp_path, capsys):
    q = tmp_path / "q.json"
    q.write_text("{}")
    assert bench_main(["real", "--dataset", "mlvu", "--questions", str(q), "--server", "http://127.0.0.1:9"]) == 2
    assert "top level" in capsys.readouterr().err
