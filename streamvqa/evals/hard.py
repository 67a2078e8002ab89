"""Hard streaming QA: busy 30/60-minute streams, distractors, questions at 1-45 minutes' distance.

One method (a preset, optionally held to a `--kv-budget` of hot memory) runs over streams of
`streamvqa.synth.hard`; questions are asked *while* frames arrive, at their `asked_at` times.
Two references need no budget: `full` (everything in context, the offline full-memory answer)
and `oracle` (the model given only each question's evidence frames: what perfect memory could
give this model). One is held to the budget: `uniform`, the offline baseline (frames sampled
uniformly from everything before the question, as many as the budget holds, encoded afresh per
question): the floor a memory policy should beat. Reported: accuracy per type, per distance, single- against multi-object
evidence and for answers yes against no, evidence recall and precision
(the "when did the digit 7 appear?" type is scored on evidence alone), the hot tokens the run
really held, store bytes, and time to first token.

    streamvqa eval hard --method rekv --minutes 30 --kv-budget 10% [--streams 1] [--json OUT]
    streamvqa eval hard --method oracle --minutes 60
    streamvqa eval hard --method uniform --minutes 60 --kv-budget 5%
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from streamvqa.cliargs import json_object
from streamvqa.evals.budget import FRAME_TOKENS, HotMeter, budget_options, parse_budget, preset_of
from streamvqa.evals.common import add_engine_args, normalise, write_json
from streamvqa.evals.scoring import evidence_scores, evidence_summary, summarise, truth_frames
from streamvqa.synth.hard import HARD_SEED, hard_questions, hard_stream, moments, shown_frames
from streamvqa.synth.streams import Stream

REFERENCES = ("oracle", "uniform")  # not presets: answered offline by the model
FLOORS = ("uniform",)  # references held to the budget


def prepared(seed: int, minutes: float, fps: float = 1.0, via_mp4: bool = False, **question_kw) -> dict:
    """A stream, its frames (rendered, or decoded from an H.264 round trip) and its questions."""
    from streamvqa.evals.needle import stream_frames

    stream = hard_stream(seed, minutes=minutes, fps=fps)
    shown = np.asarray(shown_frames(stream), dtype=bool)
    return {"seed": seed, "stream": stream, "frames": stream_frames(stream, via_mp4), "shown": shown,
            "questions": hard_questions(stream, **question_kw), "full_tokens": int(shown.sum()) * FRAME_TOKENS}


def _row(q: dict, prediction: str, evidence: list, fps: float, timings: dict | None = None) -> dict:
    scores = evidence_scores(evidence, q["evidence"], fps) if q["evidence"] else {"recall": None, "precision": None}
    return {
        "type": q["type"], "bucket": q["bucket"], "distance": q["distance"], "objects": q["objects"],
        "asked_at": q["asked_at"],
        "question": q["question"], "answer": q["answer"], "prediction": prediction, "scored": q["scored"],
        "correct": q["scored"] == "answer" and normalise(prediction) == normalise(q["answer"]),
        "evidence_truth": q["evidence"], "evidence": [list(e) for e in evidence],
        "evidence_recall": scores["recall"], "evidence_precision": scores["precision"],
        "first_token_s": (timings or {}).get("first_token_s"), "total_s": (timings or {}).get("total_s"),
    }


def run_method(engine, method: str, options: dict | None, data: dict, meter: HotMeter) -> tuple[list[dict], dict]:
    """Push the stream's frames into a session, answering each question once every frame before
    its `asked_at` is in; rows and the session's final statistics."""
    stream: Stream = data["stream"]
    qs = data["questions"]
    sid = f"hard-{data['seed']}-{method}-{time.monotonic_ns()}"
    session = engine.open_stream(sid, method=preset_of(method), options=options)
    rows: list[dict] = []
    k = 0

    def ask_until(t: float) -> None:
        nonlocal k
        while k < len(qs) and qs[k]["asked_at"] <= t:
            q = qs[k]
            ans = session.answer(q["question"], max_tokens=8 if q["scored"] == "answer" else 1)
            meter.after_answer(session)
            rows.append(_row(q, ans.text, ans.evidence, stream.fps, ans.timings))
            k += 1

    try:
        t0 = time.perf_counter()
        for img, t in data["frames"]:
            ask_until(t)
            session.push_frame(img, t)
            meter.after_frame(session)
        ask_until(float("inf"))
        stats = session.stats()
        info = {"seconds": time.perf_counter() - t0, "kv_bytes": dict(stats.kv_bytes),
                "kv_peak_bytes": dict(stats.kv_peak_bytes), "frames": len(data["frames"])}
    finally:
        engine.close_stream(sid)
    return rows, info


def oracle_frames(data: dict, q: dict) -> list[tuple[np.ndarray, float]]:
    """The frames of the question's evidence; for a near miss ("was there a purple cross?",
    no evidence) the last moments before it that showed its colour and its shape."""
    stream, frames = data["stream"], data["frames"]
    ranges = q["evidence"]
    if not ranges:
        seen = [m for m in moments(stream) if m.t < q["asked_at"]]
        k = q["key"]
        for attr in ("colour", "shape"):
            hit = [m for m in seen if any(getattr(o, attr) == k[attr] for o in m.objects)]
            if hit:
                ranges = [*ranges, [hit[-1].t, hit[-1].end]]
    idx = sorted(truth_frames(ranges, stream.fps))
    return [frames[i] for i in idx if i < len(frames)]


def uniform_frames(data: dict, q: dict, budget: int) -> list[int]:
    """The offline baseline's frame indices for a question: evenly spaced over every frame before
    it, the most whose tokens fit `budget` (a frame that shows nothing costs none)."""
    n = min(len(data["frames"]), int(np.ceil(q["asked_at"] * data["stream"].fps - 1e-9)))
    shown = np.asarray(data["shown"], dtype=bool)
    best: list[int] = []
    for k in range(1, n + 1):
        idx = np.unique(np.linspace(0, n - 1, k).round().astype(int))
        if int(shown[idx].sum()) * FRAME_TOKENS > budget:
            break
        best = idx.tolist()
    return best


def run_offline(adapter, data: dict, method: str, budget: int | None) -> tuple[list[dict], int]:
    """`oracle` or `uniform` over one stream: rows and the most tokens one question was given."""
    from streamvqa.evals.frames import answer_offline

    rows, peak = [], 0
    for q in data["questions"]:
        if method == "oracle":
            given = oracle_frames(data, q)
            carried = [t for _, t in given]
        else:
            idx = uniform_frames(data, q, budget or 0)
            peak = max(peak, int(np.asarray(data["shown"])[idx].sum()) * FRAME_TOKENS)
            given = [data["frames"][i] for i in idx]
            carried = [data["frames"][i][1] for i in idx if data["shown"][i]]  # an empty frame carries no tokens
        t0 = time.perf_counter()
        text = answer_offline(adapter, given, q["question"]) if q["scored"] == "answer" else ""
        ev = [[t, t] for t in carried] if q["evidence"] else []
        rows.append(_row(q, text, ev, data["stream"].fps, {"total_s": time.perf_counter() - t0}))
    return rows, peak


def summary(method: str, rows: list[dict], extra: dict) -> dict:
    scored = [r for r in rows if r["scored"] == "answer"]
    ttft = [r["first_token_s"] for r in rows if r.get("first_token_s") is not None]
    when = [r for r in rows if r["type"] == "digit_when"]
    return {
        "method": method, "n": len(scored),
        "accuracy": sum(r["correct"] for r in scored) / max(1, len(scored)),
        "per_type": summarise(rows, "type"), "per_distance": summarise(rows, "bucket"),
        "evidence": evidence_summary(rows), "evidence_when": evidence_summary(when),
        "per_objects": summarise(rows, "objects"),
        "no_answers": summarise([r for r in scored if r["answer"] == "no"], "type"),
        "yes_no": summarise([r for r in scored if r["answer"] in ("yes", "no")], "answer"),
        "ttft_median_s": statistics.median(ttft) if ttft else None, **extra, "rows": rows,
    }


def evaluate(engine, method: str, options: dict | None, datas: list[dict], kv_budget: str | None = None) -> dict:
    """One method (or a reference) over prepared streams, at an optional hot-memory budget."""
    token_bytes = token_bytes_of(engine.adapter)
    rows: list[dict] = []
    extra: dict = {"options": options or {}, "streams": [d["seed"] for d in datas],
                   "full_tokens": [d["full_tokens"] for d in datas], "token_bytes": token_bytes}
    budget = None
    if kv_budget is not None:
        budget = min(parse_budget(kv_budget, d["full_tokens"], token_bytes) for d in datas)
        extra.update(kv_budget=kv_budget, budget_tokens=budget, budget_bytes=budget * token_bytes)
    if method in FLOORS and budget is None:
        raise ValueError(f"{method} is held to a budget: give a kv budget")
    if method in REFERENCES and method not in FLOORS and budget is not None:
        raise ValueError(f"{method} is not held to a budget: give no kv budget")
    if method in REFERENCES:
        t0, peak = time.perf_counter(), 0
        for d in datas:
            r, p = run_offline(engine.adapter, d, method, budget)
            rows, peak = rows + r, max(peak, p)
        if method in FLOORS:
            extra.update(hot_peak_tokens=peak, hot_peak_bytes=peak * token_bytes, within_budget=peak <= budget,
                         store_bytes=0)
        extra.update(seconds=time.perf_counter() - t0)
        return summary(method, rows, extra)
    if budget is not None:
        options = {**budget_options(method, budget), **(options or {})}
        extra.update(options=options)
    meter = HotMeter()
    infos = []
    for d in datas:
        r, info = run_method(engine, method, options, d, meter)
        rows += r
        infos.append(info)
    extra.update(hot_peak_tokens=meter.peak, hot_encoder_tokens=meter.encoder, hot_answer_tokens=meter.answer,
                 hot_peak_bytes=meter.peak * token_bytes,
                 within_budget=None if budget is None else meter.peak <= budget,
                 store_bytes=max(stored_bytes(i["kv_bytes"]) for i in infos),
                 kv_bytes=infos[-1]["kv_bytes"], seconds=sum(i["seconds"] for i in infos))
    return summary(method, rows, extra)


def stored_bytes(kv_bytes: dict[str, int]) -> int:
    """KV a stream keeps outside the encoder's cache: store tiers and a retained memory."""
    return sum(v for k, v in kv_bytes.items() if k not in ("device", "answer", "window"))


def token_bytes_of(adapter) -> int:
    """K and V of one token over every layer, in the adapter's dtype."""
    import torch

    es = torch.empty((), dtype=adapter.dtype).element_size()
    return 2 * adapter.n_layers * adapter.n_kv_heads * adapter.head_dim * es


def report(result: dict) -> str:
    lines = [f"{result['method']}: accuracy {result['accuracy']:.3f} over {result['n']}, evidence recall "
             f"{result['evidence']['recall']:.3f} precision {result['evidence']['precision']:.3f}"]
    if result.get("budget_tokens"):
        lines[0] += (f", budget {result['budget_tokens']} tokens, hot peak {result['hot_peak_tokens']} "
                     f"({'within' if result['within_budget'] else 'OVER'})")
    for title, table in (("type", result["per_type"]), ("distance", result["per_distance"]),
                         ("objects", result["per_objects"]), ("yes/no", result["yes_no"])):
        lines.append(f"  {title:<9}" + "  ".join(f"{k} {v['accuracy']:.2f} ({v['n']})" for k, v in table.items()))
    return "\n".join(lines)


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="streamvqa eval hard", description=__doc__.splitlines()[0])
    p.add_argument("--method", default="full",
                   help="method preset, 'oracle' (evidence frames only) or 'uniform' (the offline baseline, needs a budget)")
    p.add_argument("--options", type=json_object, default=None, help="method options as JSON (over the budget's)")
    p.add_argument("--kv-budget", default=None, help="hot memory: tokens (2048), share of full (5%%) or bytes (96MiB)")
    p.add_argument("--minutes", type=float, default=30.0, help="stream length in minutes (default 30)")
    p.add_argument("--streams", type=int, default=1, help="number of streams (default 1)")
    p.add_argument("--fps", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=HARD_SEED)
    p.add_argument("--mp4", action="store_true", help="feed frames decoded from an H.264 round trip")
    add_engine_args(p)
    return p


def run(args: argparse.Namespace) -> int:
    if args.minutes <= 0 or args.streams < 1 or args.fps <= 0:
        print("streamvqa eval hard: --minutes, --streams and --fps must be positive", file=sys.stderr)
        return 2
    from streamvqa.engine import Engine, EngineConfig
    from streamvqa.engine.errors import EngineError

    datas = [prepared(args.seed + k, args.minutes, args.fps, args.mp4) for k in range(args.streams)]
    engine = Engine(EngineConfig(model=args.model, threads=args.threads, device=args.device))
    try:
        result = evaluate(engine, args.method, args.options, datas, args.kv_budget)
    except (ValueError, EngineError) as e:
        print(f"streamvqa eval hard: {e}", file=sys.stderr)
        return 2
    finally:
        engine.close()
    result["model"] = engine.model_info()
    result["minutes"] = args.minutes
    print(report(result))
    write_json(args.json, result)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
