"""Replay a real benchmark against a running server: each video as a live stream, each question at
its timestamp, answers scored.

    streamvqa bench real --dataset mlvu --questions 1_plotQA.json --videos DIR \
        (--server URL | --embedded [--model M]) [--method rekv] [--options JSON] [--fps 1|native] \
        [--judge-url URL --judge-model NAME] [--json OUT]

Per video: ``POST /v1/streams`` (the file's URL, ``fps``, ``method``, ``options``); the server
plays files at their own pace (``realtime_files``), so the stream advances at the video's real
rate. Each question waits (client side, polling ``GET /v1/streams/{id}``) until the stream's
newest encoded frame reaches the question's ``ask_at`` (or the stream ends), then is asked with
``at = ask_at`` so the answer only draws on what was shown up to then; questions without a
timestamp are asked once the whole video has been played. The stream is deleted afterwards.

Scoring (:func:`score_row`): multiple choice by exact match of the option letter (or of an
option's text, normalised); yes/no and counts by the first yes/no word / number of the answer;
open-ended by an OpenAI-compatible chat-completions judge (:class:`Judge`) that answers a yes/no
and a 0-5 score. Open-ended questions without a judge, and questions without ground truth, stay
unscored (``correct: null``). Accuracy is over scored questions, overall and per task and kind.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from bench.datasets import DATASETS, BenchQuestion, load, resolve_video
from bench.datasets.frames import CACHE_DIR, FramesError, npy_video
from bench.datasets.vstream import KEYFRAME_RATE

FINAL_STATES = ("ended", "failed", "stopped")
MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."
JUDGE_URL_ENV, JUDGE_MODEL_ENV, JUDGE_KEY_ENV = "STREAMVQA_JUDGE_URL", "STREAMVQA_JUDGE_MODEL", "STREAMVQA_JUDGE_API_KEY"
SERVER_KEY_ENV = "STREAMVQA_API_KEY"


# ------------------------------------------------------------------------------------ prompts


def prompt(q: BenchQuestion) -> str:
    """The text sent to the server for one question."""
    if q.kind == "multiple_choice":
        opts = "\n".join(f"({chr(ord('A') + i)}) {o}" for i, o in enumerate(q.options or ()))
        return f"{q.question}\nOptions:\n{opts}\n{MC_INSTRUCTION}"
    return q.question


# ------------------------------------------------------------------------------------ scoring


def normalise(text: str) -> str:
    """Lower case, punctuation and articles dropped, whitespace collapsed (for text matches)."""
    t = re.sub(r"[^\w\s]", " ", text.lower())
    t = re.sub(r"\b(a|an|the)\b", " ", t)
    return " ".join(t.split())


# a letter is a letter when it stands alone or is followed by punctuation ("B", "(B) ...", "B. ...");
# "A man walks" is text, not option A
_LEAD_LETTER = re.compile(r"^\s*\(?([A-Za-z])(?:\)|[.:,;]|\s*$)")
_KEYWORD_LETTER = re.compile(r"(?i:answer|option|choice)\s*(?:is)?\s*[:\-]?\s*\(?([A-Za-z])(?=$|[\s.,:;)\]])")


def choice_of(prediction: str, options: tuple[str, ...]) -> str | None:
    """The option letter a free-text answer picks, or ``None``.

    In order: a leading letter standing alone or followed by punctuation ("B", "(B) ...",
    "B. ..."), a letter after "answer/option/choice (is)" (lower case only when punctuation or
    the end follows, so "the answer is a book" is not option A), the whole answer equal to one
    option's text, and the answer containing exactly one option's text. Letters beyond the
    options do not count.
    """
    valid = {chr(ord("A") + i) for i in range(len(options))}
    text = prediction.strip()
    m = _LEAD_LETTER.match(text)
    if m and m.group(1).upper() in valid:
        return m.group(1).upper()
    for m in _KEYWORD_LETTER.finditer(text):
        letter, after = m.group(1), text[m.end():m.end() + 1]
        if (letter.isupper() or after in ("", ".", ",", ":", ";", ")", "]")) and letter.upper() in valid:
            return letter.upper()
    norm = normalise(text)
    texts = [normalise(o) for o in options]
    for i, t in enumerate(texts):
        if t and norm == t:
            return chr(ord("A") + i)
    hits = [i for i, t in enumerate(texts) if t and re.search(rf"\b{re.escape(t)}\b", norm)]
    if len(hits) == 1:
        return chr(ord("A") + hits[0])
    return None


_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split())}


def number_of(prediction: str) -> int | None:
    m = re.search(r"-?\d+", prediction)
    if m:
        return int(m.group())
    for w in normalise(prediction).split():
        if w in _NUMBER_WORDS:
            return _NUMBER_WORDS[w]
    return None


def yes_no_of(prediction: str) -> str | None:
    for w in normalise(prediction).split():
        if w in ("yes", "y"):
            return "yes"
        if w in ("no", "n"):
            return "no"
    return None


@dataclass(frozen=True)
class Verdict:
    correct: bool
    score: float | None
    raw: str


def parse_verdict(text: str) -> Verdict:
    """A judge's reply -> verdict. Accepts JSON, a Python dict literal, or loose "yes ... 4" text."""
    body = text.strip()
    m = re.search(r"\{.*\}", body, re.S)
    data: Any = None
    if m:
        for parse in (json.loads, ast.literal_eval):
            try:
                data = parse(m.group())
                break
            except (ValueError, SyntaxError):
                continue
    if isinstance(data, dict):
        pred = str(data.get("pred", data.get("correct", ""))).strip().lower()
        score = data.get("score")
        try:
            score = float(score) if score is not None else None
        except (TypeError, ValueError):
            score = None
        return Verdict(pred in ("yes", "true", "1"), score, text)
    word = yes_no_of(body)
    num = re.search(r"\b([0-5](?:\.\d+)?)\b", body)
    if word is None:
        raise ValueError(f"judge reply has no yes/no: {text[:200]!r}")
    return Verdict(word == "yes", float(num.group(1)) if num else None, text)


@dataclass
class JudgeConfig:
    """An OpenAI-compatible chat-completions endpoint (``url``: the base, e.g. ``.../v1``, or the
    full ``.../chat/completions``)."""

    url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = 60.0
    retries: int = 2

    @property
    def endpoint(self) -> str:
        u = self.url.rstrip("/")
        return u if u.endswith("/chat/completions") else f"{u}/chat/completions"

    @classmethod
    def from_env(cls, url: str | None = None, model: str | None = None) -> JudgeConfig | None:
        url = url or os.environ.get(JUDGE_URL_ENV)
        if not url:
            return None
        return cls(url=url, model=model or os.environ.get(JUDGE_MODEL_ENV) or "gpt-4o-mini",
                   api_key=os.environ.get(JUDGE_KEY_ENV) or os.environ.get("OPENAI_API_KEY"))


JUDGE_SYSTEM = (
    "You grade answers to questions about a video. Compare the predicted answer with the correct "
    "answer and decide whether they mean the same thing; paraphrases and synonyms count as a match, "
    "extra correct detail is fine, contradictions or missing key facts are not."
)


def judge_messages(question: str, reference: str, prediction: str) -> list[dict[str, str]]:
    user = (
        f"Question: {question}\nCorrect answer: {reference}\nPredicted answer: {prediction}\n\n"
        "Reply with only a JSON object with two keys: \"pred\", \"yes\" if the prediction matches the "
        "correct answer and \"no\" otherwise, and \"score\", an integer from 0 (no match) to 5 (full "
        "match). Example: {\"pred\": \"yes\", \"score\": 4}"
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


class Judge:
    """Scores open-ended answers through a chat-completions endpoint (temperature 0)."""

    def __init__(self, cfg: JudgeConfig, client: httpx.Client | None = None) -> None:
        self.cfg = cfg
        headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
        self.client = client or httpx.Client(timeout=cfg.timeout_s, headers=headers)

    def close(self) -> None:
        self.client.close()

    def __call__(self, question: str, reference: str, prediction: str) -> Verdict:
        body = {"model": self.cfg.model, "temperature": 0, "max_tokens": 64,
                "messages": judge_messages(question, reference, prediction)}
        last: Exception | None = None
        for attempt in range(self.cfg.retries + 1):
            try:
                r = self.client.post(self.cfg.endpoint, json=body)
                if r.status_code == 429 or r.status_code >= 500:
                    raise httpx.HTTPStatusError(f"judge answered {r.status_code}", request=r.request, response=r)
                r.raise_for_status()
                return parse_verdict(r.json()["choices"][0]["message"]["content"] or "")
            except (httpx.TransportError, httpx.HTTPStatusError) as e:
                last = e
                status = getattr(getattr(e, "response", None), "status_code", 0)
                if isinstance(e, httpx.HTTPStatusError) and status < 500 and status != 429:
                    break  # a 4xx other than 429 will not get better
                time.sleep(min(8.0, 0.5 * 2**attempt))
        raise RuntimeError(f"judge request failed: {last}")


def score_row(q: BenchQuestion, row: dict, judge: Judge | None) -> None:
    """Fill ``row['correct']`` (bool, or None when unscored) and the match details in place."""
    pred = row.get("prediction")
    row["correct"] = None
    if pred is None or q.answer is None:
        return
    if q.kind == "multiple_choice":
        row["chosen"] = choice_of(pred, q.options or ())
        row["correct"] = row["chosen"] == q.answer
    elif q.kind == "yes_no":
        row["chosen"] = yes_no_of(pred)
        row["correct"] = row["chosen"] == q.answer
    elif q.kind == "count":
        n = number_of(pred)
        row["chosen"] = None if n is None else str(n)
        row["correct"] = row["chosen"] == q.answer
    elif judge is not None:
        try:
            v = judge(q.question, q.answer, pred)
        except (RuntimeError, ValueError, KeyError, IndexError) as e:
            row["judge_error"] = str(e)
            return
        row["correct"], row["judge_score"], row["judge_raw"] = v.correct, v.score, v.raw


# ------------------------------------------------------------------------------------ replay


@dataclass
class ReplayConfig:
    """How questions are replayed against one server."""

    server: str
    api_key: str | None = field(default=None, repr=False)
    method: str | None = None
    options: dict[str, Any] | None = None
    fps: float | None = None  # None: the server's default; see native_fps
    native_fps: bool = False  # send each video's own frame rate (capped at the API's 120)
    videos_dir: Path | None = None
    video_url_prefix: str | None = None  # e.g. http://media/videos/: the server fetches videos there
    max_tokens: int = 32
    stall_timeout_s: float = 120.0  # no stream progress for this long: stop waiting and ask
    request_timeout_s: float = 600.0
    poll_s: float = 0.1
    rate_limit_retries: int = 5
    concurrency: int = 1  # videos replayed at once (each is one live stream on the server)


def native_fps(path: Path) -> float | None:
    """The video's average frame rate (PyAV), capped at 120 (the API's limit)."""
    import av

    try:
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            rate = s.average_rate or s.guessed_rate
            return min(120.0, float(rate)) if rate else None
    except (av.error.FFmpegError, IndexError):
        return None


def local_video(q: BenchQuestion, cfg: ReplayConfig) -> Path:
    """The question's video file (also at the benchmark's raw-download layouts); a ``.npy``
    keyframe array (RVS-Movie) is encoded once into an MP4 under ``<videos>/.npy-mp4/``."""
    path = resolve_video(cfg.videos_dir, q.video, q.video_alternatives)
    if path.suffix.lower() == ".npy":
        path = npy_video(path, (cfg.videos_dir or path.parent) / CACHE_DIR, KEYFRAME_RATE)
    return path


def video_url(q: BenchQuestion, cfg: ReplayConfig) -> tuple[str, Path | None]:
    """(URL for ``POST /v1/streams``, local file if there is one)."""
    if cfg.video_url_prefix:
        local = None
        try:
            local = local_video(q, cfg) if cfg.videos_dir else None
        except FileNotFoundError:
            pass
        name = q.video[2:] if q.video.startswith("./") else q.video
        if (local is not None and cfg.videos_dir is not None and local.name != Path(name).name
                and local.is_relative_to(cfg.videos_dir)):
            name = local.relative_to(cfg.videos_dir).as_posix()  # found at a raw layout, or converted
        return cfg.video_url_prefix.rstrip("/") + "/" + quote(name), local
    path = local_video(q, cfg).resolve()
    return path.as_uri(), path


def _errors(questions: list[BenchQuestion], code: str, message: str) -> list[dict]:
    return [{**_base_row(q), "error": {"code": code, "message": message}} for q in questions]


def _base_row(q: BenchQuestion) -> dict:
    return {"id": q.id, "video": q.video, "task": q.task, "kind": q.kind, "question": q.question,
            "options": list(q.options) if q.options else None, "answer": q.answer, "answer_text": q.answer_text,
            "ask_at": q.ask_at, "evidence_truth": list(q.evidence) if q.evidence else None,
            "prediction": None, "error": None}


class Replayer:
    """Replays videos one at a time against ``cfg.server``."""

    def __init__(self, cfg: ReplayConfig, client: httpx.Client | None = None,
                 log: Callable[[str], None] = lambda s: None) -> None:
        self.cfg = cfg
        headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
        self.http = client or httpx.Client(base_url=cfg.server, timeout=cfg.request_timeout_s, headers=headers)
        self.log = log

    def close(self) -> None:
        self.http.close()

    def _request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """One API call, retried with backoff while the server answers ``429 rate_limited``."""
        for attempt in range(self.cfg.rate_limit_retries + 1):
            r = self.http.request(method, url, **kw)
            if r.status_code != 429 or attempt == self.cfg.rate_limit_retries:
                return r
            time.sleep(float(r.headers.get("Retry-After", 0)) or min(10.0, 0.5 * 2**attempt))
        return r

    def wait_for(self, sid: str, at: float | None) -> tuple[dict, bool]:
        """Poll the stream until it was encoded up to ``at`` (``None``: until it ends), or it ends,
        or it made no progress for ``stall_timeout_s``. Returns (last info, stalled)."""
        last_progress, marker = time.monotonic(), None
        while True:
            r = self._request("GET", f"/v1/streams/{sid}")
            if r.status_code != 200:  # gone (deleted, server restarted): nothing to wait for
                return {"state": "gone", "last_error": _error_body(r)}, False
            info = r.json()
            t = info.get("last_frame_t")
            if info.get("state") in FINAL_STATES or (at is not None and t is not None and t >= at):
                return info, False
            now_marker = (info.get("frames_decoded"), info.get("frames_encoded"), t)
            if now_marker != marker:
                marker, last_progress = now_marker, time.monotonic()
            elif time.monotonic() - last_progress > self.cfg.stall_timeout_s:
                return info, True
            time.sleep(self.cfg.poll_s)

    def replay_video(self, questions: list[BenchQuestion]) -> list[dict]:
        """Stream one video and ask its questions in timestamp order (untimed ones last)."""
        cfg = self.cfg
        first = questions[0]
        try:
            url, local = video_url(first, cfg)
        except FileNotFoundError as e:
            return _errors(questions, "video_not_found", str(e))
        except FramesError as e:
            return _errors(questions, "bad_frames", str(e))
        body: dict[str, Any] = {"url": url, "name": f"{first.dataset}:{Path(first.video).name}"[:200]}
        fps = native_fps(local) if cfg.native_fps and local is not None else cfg.fps
        if fps:
            body["fps"] = fps
        if cfg.method:
            body["method"] = cfg.method
        if cfg.options:
            body["options"] = cfg.options
        t0 = time.monotonic()
        r = self._request("POST", "/v1/streams", json=body)
        if r.status_code != 201:
            err = _error_body(r)
            return _errors(questions, err["code"], f"POST /v1/streams: {err['message']}")
        sid = r.json()["id"]
        rows: list[dict] = []
        try:
            order = sorted(questions, key=lambda q: (q.ask_at is None, q.ask_at or 0.0))
            for q in order:
                row = _base_row(q)
                row["stream"] = {"id": sid, "fps": fps}
                info, stalled = self.wait_for(sid, q.ask_at)
                row["stream_t_at_ask"] = info.get("last_frame_t")
                row["stream_state_at_ask"] = info.get("state")
                row["stalled"] = stalled
                req: dict[str, Any] = {"question": prompt(q), "max_tokens": cfg.max_tokens, "temperature": 0.0}
                if q.ask_at is not None:
                    req["at"] = q.ask_at
                t_ask = time.monotonic()
                row["asked_wall_s"] = t_ask - t0
                try:
                    ar = self._request("POST", f"/v1/streams/{sid}/questions", json=req)
                except httpx.HTTPError as e:  # one lost answer must not end the run
                    row["error"] = {"code": "client_error", "message": f"{type(e).__name__}: {e}"}
                    rows.append(row)
                    continue
                row["latency_s"] = time.monotonic() - t_ask
                if ar.status_code == 200:
                    a = ar.json()
                    row.update(prediction=a["answer"], evidence=[[e["t_start"], e["t_end"]] for e in a["evidence"]],
                               timings=a["timings"], tokens=a["tokens"], finish_reason=a["finish_reason"])
                else:
                    row["error"] = _error_body(ar)
                rows.append(row)
                self.log(f"  {q.id} @ {q.ask_at if q.ask_at is not None else 'end'}: "
                         f"{row['prediction']!r}" + (f" error {row['error']['code']}" if row["error"] else ""))
            fr = self._request("GET", f"/v1/streams/{sid}")
            final = fr.json() if fr.status_code == 200 else {"state": "gone"}
            for row in rows:
                row["stream"].update(state=final.get("state"), frames_encoded=final.get("frames_encoded"),
                                     last_error=final.get("last_error"))
        finally:
            try:
                self._request("DELETE", f"/v1/streams/{sid}")
            except httpx.HTTPError as e:
                self.log(f"  DELETE /v1/streams/{sid} failed: {e}")
        return rows


def _error_body(r: httpx.Response) -> dict[str, str]:
    try:
        err = r.json()["error"]
        return {"code": str(err["code"]), "message": str(err.get("message", ""))}
    except (ValueError, KeyError, TypeError):
        return {"code": f"http_{r.status_code}", "message": r.text[:200]}


def by_video(questions: list[BenchQuestion]) -> dict[str, list[BenchQuestion]]:
    groups: dict[str, list[BenchQuestion]] = defaultdict(list)
    for q in questions:
        groups[q.video].append(q)
    return dict(groups)


# ------------------------------------------------------------------------------------ report


def _bucket(rows: list[dict]) -> dict[str, Any]:
    scored = [r for r in rows if r.get("correct") is not None]
    correct = sum(bool(r["correct"]) for r in scored)
    return {"n": len(rows), "answered": sum(r.get("prediction") is not None for r in rows),
            "scored": len(scored), "correct": correct, "accuracy": correct / len(scored) if scored else None}


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "p50": None, "p90": None, "max": None}
    s = sorted(values)
    return {"mean": statistics.fmean(s), "p50": s[len(s) // 2], "p90": s[min(len(s) - 1, int(0.9 * len(s)))],
            "max": s[-1]}


def summarise(rows: list[dict]) -> dict[str, Any]:
    """Accuracy overall / per task / per kind, latency and judge figures."""
    per: dict[str, dict[str, list[dict]]] = {"task": defaultdict(list), "kind": defaultdict(list)}
    for r in rows:
        per["task"][r["task"]].append(r)
        per["kind"][r["kind"]].append(r)
    scores = [r["judge_score"] for r in rows if r.get("judge_score") is not None]
    answered = [r for r in rows if r.get("prediction") is not None]
    return {
        **_bucket(rows),
        "errors": sum(r.get("error") is not None for r in rows),
        "per_task": {k: _bucket(v) for k, v in sorted(per["task"].items())},
        "per_kind": {k: _bucket(v) for k, v in sorted(per["kind"].items())},
        "latency_s": _stats([r["latency_s"] for r in answered]),
        "first_token_s": _stats([r["timings"]["first_token_s"] for r in answered if r.get("timings")]),
        "judge_mean_score": statistics.fmean(scores) if scores else None,
    }


def table(summary: dict[str, Any]) -> str:
    def fmt(a: float | None) -> str:
        return "-" if a is None else f"{a:.3f}"

    lines = ["| task | n | scored | accuracy |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['n']} | {v['scored']} | {fmt(v['accuracy'])} |" for k, v in summary["per_task"].items()]
    lines.append(f"| **all** | {summary['n']} | {summary['scored']} | {fmt(summary['accuracy'])} |")
    return "\n".join(lines)


def run(questions: list[BenchQuestion], cfg: ReplayConfig, judge: Judge | None = None,
        log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Replay every video of ``questions`` against ``cfg.server``; the result (JSON-able)."""
    t0 = time.monotonic()
    groups = list(by_video(questions).items())
    replayer = Replayer(cfg, log=log)

    def one(k: int) -> list[dict]:
        video, qs = groups[k]
        log(f"[{k + 1}/{len(groups)}] {video}: {len(qs)} questions")
        video_rows = replayer.replay_video(qs)
        by_id = {q.id: q for q in qs}
        for row in video_rows:
            score_row(by_id[row["id"]], row, judge)
        return video_rows

    rows: list[dict] = []
    try:
        if cfg.concurrency <= 1:
            for k in range(len(groups)):
                rows += one(k)
        else:
            # live streams in parallel (real-time playback dominates a run); rows keep file order
            with ThreadPoolExecutor(max_workers=cfg.concurrency, thread_name_prefix="replay") as pool:
                for video_rows in pool.map(one, range(len(groups))):
                    rows += video_rows
    finally:
        replayer.close()
    return {
        "bench": "real",
        "dataset": questions[0].dataset if questions else None,
        "server": cfg.server,
        "method": cfg.method,
        "options": cfg.options or {},
        "fps": "native" if cfg.native_fps else cfg.fps,
        "max_tokens": cfg.max_tokens,
        "judge": {"url": judge.cfg.endpoint, "model": judge.cfg.model} if judge else None,
        "videos": len(groups),
        "concurrency": cfg.concurrency,
        "summary": summarise(rows),
        "rows": rows,
        "seconds": time.monotonic() - t0,
    }


# ------------------------------------------------------------------------------------ embedded server


@contextmanager
def embedded_server(model: str, media_root: str | Path, device: str = "cpu", realtime: bool = True,
                    engine: Any = None, load_timeout_s: float = 600.0, **settings: Any) -> Iterator[str]:
    """A server in this process on a free 127.0.0.1 port, auth off, files only under
    ``media_root``; yields its URL once ``/ready``, stops it on exit."""
    from streamvqa.server.app import create_app
    from streamvqa.server.main import BackgroundServer
    from streamvqa.server.settings import ServerSettings

    s = ServerSettings(host="127.0.0.1", port=0, model=model, device=device, auth="off",
                       media_root=str(Path(media_root).resolve()), realtime_files=realtime,
                       log_level="warning", **settings)
    server = BackgroundServer(create_app(s, engine=engine), s).start()
    try:
        deadline = time.monotonic() + load_timeout_s
        with httpx.Client(base_url=server.url, timeout=30.0) as http:
            while http.get("/ready").status_code != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the embedded server did not get ready: {http.get('/ready').text}")
                time.sleep(0.2)
        yield server.url
    finally:
        server.stop()


# ------------------------------------------------------------------------------------ CLI


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``bench real``: add to the ``bench`` command's subparsers."""
    p = subparsers.add_parser("real", help="replay a real benchmark's videos as live streams and score the answers",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    p.add_argument("--questions", required=True, metavar="FILE", help="the benchmark's question file (JSON)")
    p.add_argument("--videos", metavar="DIR", help="directory the question file's video names are relative to")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--server", metavar="URL", help="a running server (key: $STREAMVQA_API_KEY)")
    where.add_argument("--embedded", action="store_true", help="start a server in this process (auth off, "
                       "media root --videos)")
    p.add_argument("--model", default="default", help="--embedded: the model")
    p.add_argument("--device", default="cpu", help="--embedded: the device")
    p.add_argument("--fast", action="store_true", help="--embedded: decode files as fast as possible instead "
                   "of at their real pace")
    p.add_argument("--video-url-prefix", metavar="URL", help="send PREFIX/<video name> instead of file:// URLs")
    p.add_argument("--method", default=None, help="method preset (server default if omitted)")
    p.add_argument("--options", default=None, help="method options as JSON, e.g. '{\"topk\": 8}'")
    p.add_argument("--fps", default=None, help="sampling rate per stream: a number, or 'native' (each video's own "
                   "frame rate, capped at 120); default: the server's")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--parallel", type=int, default=1, metavar="N", help="replay N videos at once (N live streams; "
                   "the server's max_streams applies)")
    p.add_argument("--tasks", default=None, help="comma-separated task names to keep")
    p.add_argument("--limit", type=int, default=None, help="at most this many questions (file order)")
    p.add_argument("--stall-timeout", type=float, default=120.0, help="give up waiting for a timestamp after this "
                   "many seconds without stream progress")
    p.add_argument("--judge-url", default=None, help=f"chat-completions endpoint for open-ended answers (or ${JUDGE_URL_ENV}); "
                   f"key from ${JUDGE_KEY_ENV} or $OPENAI_API_KEY")
    p.add_argument("--judge-model", default=None, help=f"judge model (or ${JUDGE_MODEL_ENV}; default gpt-4o-mini)")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write the result JSON here")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=main)
    return p


def load_note(report: dict[str, Any]) -> str:
    """One line on what the loader left out or flagged, by reason."""
    def by(reasons: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))

    parts = [f"{report['questions']} questions loaded"]
    if report["skipped"]:
        parts.append(f"{report['skipped']} entries skipped ({by(report['skipped_by_reason'])})")
    if report["flagged"]:
        parts.append(f"{report['flagged']} flagged ({by(report['flagged_by_reason'])})")
    return "questions file: " + "; ".join(parts) + " (details under 'load' in the JSON)"


def main(args: argparse.Namespace) -> int:
    def fail(msg: str) -> int:
        print(f"streamvqa bench real: {msg}", file=sys.stderr)
        return 2

    try:
        loaded = load(args.dataset, args.questions)
    except (OSError, ValueError) as e:
        return fail(str(e))
    questions: list[BenchQuestion] = list(loaded)
    if loaded.skipped or loaded.flagged:
        print(load_note(loaded.report()), file=sys.stderr)
    if args.tasks:
        keep = {t.strip() for t in args.tasks.split(",") if t.strip()}
        questions = [q for q in questions if q.task in keep]
    if args.limit is not None:
        questions = questions[: args.limit]
    if not questions:
        return fail("no questions to ask")
    try:
        options = json.loads(args.options) if args.options else None
    except json.JSONDecodeError as e:
        return fail(f"--options is not JSON: {e}")
    fps: float | None = None
    if args.fps not in (None, "native"):
        try:
            fps = float(args.fps)
        except ValueError:
            return fail("--fps must be a number or 'native'")
    if args.embedded and not args.videos:
        return fail("--embedded needs --videos (the server's media root)")
    videos = Path(args.videos) if args.videos else None
    judge_cfg = JudgeConfig.from_env(args.judge_url, args.judge_model)
    judge = Judge(judge_cfg) if judge_cfg else None
    if judge is None and any(q.kind == "open" for q in questions):
        print("note: no judge endpoint (--judge-url): open-ended answers stay unscored", file=sys.stderr)
    log = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))

    def go(server: str) -> dict[str, Any]:
        cfg = ReplayConfig(server=server, api_key=None if args.embedded else os.environ.get(SERVER_KEY_ENV),
                           method=args.method, options=options, fps=fps, native_fps=args.fps == "native",
                           videos_dir=videos, video_url_prefix=args.video_url_prefix, max_tokens=args.max_tokens,
                           stall_timeout_s=args.stall_timeout, concurrency=max(1, args.parallel))
        return run(questions, cfg, judge, log=log)

    try:
        if args.embedded:
            with embedded_server(args.model, videos, device=args.device, realtime=not args.fast) as url:
                result = go(url)
            result["server"] = f"embedded ({args.model}, {args.device})"
        else:
            result = go(args.server)
    except (httpx.HTTPError, RuntimeError) as e:
        return fail(f"{type(e).__name__}: {e}")
    finally:
        if judge is not None:
            judge.close()
    result["questions_file"] = str(args.questions)
    result["load"] = loaded.report()
    s = result["summary"]
    print(table(s))
    lat = s["latency_s"]["mean"]
    print(load_note(result["load"]))
    print(f"{result['dataset']}: {s['n']} questions on {result['videos']} videos, {s['errors']} errors, "
          f"mean latency {lat if lat is None else round(lat, 3)} s, {result['seconds']:.0f} s in all")
    if args.json_out:
        out = Path(args.json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    return 0
