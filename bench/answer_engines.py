"""`streamvqa bench answer-engines`: the transformers and vllm answer engines in one run.

    streamvqa bench answer-engines [--streams 4] [--concurrency 1,16] [--minutes 0.3] [--json OUT]

One engine (the default model) with a vLLM answer process (`.venv-vllm`); `--streams` needle
streams (rekv) are encoded once. Then, for each answer engine and each concurrency c, c questions
are put at once (threads, like the server's question slots) over the streams, `--rounds` times
(after one warm-up question per engine):
questions/s and tokens/s over the wall time, p50/p99 time to first token (from the question to
its first token, queueing on the model lock included), p50 answer latency, and per engine the
ratios at 16 questions over 1. Nothing is asserted; figures are printed and written as JSON
(docs/benchmarks.md, "Answer engines"). `streamvqa bench [--quick]` runs the same comparison as
its `answer_engines` section (`section`), skipped with the reason without `.venv-vllm`.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from streamvqa.evals.common import write_json


def _percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def measure(engine, sessions: list, questions: list[list[str]], concurrency: int, rounds: int,
            max_tokens: int, answer_engine: str) -> dict:
    for s in sessions:
        s.answerer = engine.answerer if answer_engine == "vllm" else None
    asked = [(sessions[i % len(sessions)], questions[i % len(sessions)][(i // len(sessions)) % len(questions[0])])
             for i in range(concurrency)]
    ttft, latency, tokens, n = [], [], 0, 0
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for _ in range(rounds):
            for a in pool.map(lambda sq: sq[0].answer(sq[1], max_tokens=max_tokens), asked):
                ttft.append(a.timings["first_token_s"])
                latency.append(a.timings["total_s"])
                tokens += len(a.token_ids)
                n += 1
    wall = time.perf_counter() - t0
    return {"engine": answer_engine, "concurrency": concurrency, "questions": n, "tokens": tokens,
            "wall_s": wall, "questions_per_s": n / wall, "tokens_per_s": tokens / wall,
            "ttft_p50_s": _percentile(ttft, 50), "ttft_p99_s": _percentile(ttft, 99),
            "latency_p50_s": _percentile(latency, 50)}


def summary(rows: list[dict]) -> dict:
    """Per engine: p50 latency and TTFT at the highest concurrency over those of one question
    (the issue's aim with vLLM: 16 at once under 2x the latency of one)."""
    out = {}
    for name in dict.fromkeys(r["engine"] for r in rows):
        mine = sorted((r for r in rows if r["engine"] == name), key=lambda r: r["concurrency"])
        lo, hi = mine[0], mine[-1]
        if lo is hi:
            continue
        out[name] = {"concurrency": [lo["concurrency"], hi["concurrency"]],
                     "latency_p50_ratio": hi["latency_p50_s"] / lo["latency_p50_s"],
                     "ttft_p50_ratio": hi["ttft_p50_s"] / lo["ttft_p50_s"]}
    return out


def compare(model: str = "default", adapter=None, streams: int = 4, minutes: float = 0.3,
            concurrency: tuple[int, ...] = (1, 16), rounds: int = 2, max_tokens: int = 16,
            threads: int | None = None, log=print) -> dict:
    """Both engines over the same `streams` needle streams (rekv), in one engine with a vLLM
    answer process (`adapter`: reuse a loaded model)."""
    from streamvqa.engine import Engine, EngineConfig
    from streamvqa.synth.streams import needle_questions, random_stream, render_stream_frame

    t0 = time.perf_counter()
    engine = Engine(EngineConfig(model=model, answer_engine="vllm", threads=threads,
                                 vllm={"max_num_seqs": max(concurrency)}), adapter=adapter)
    start_s = time.perf_counter() - t0  # the model and the vLLM process (the engine waits for it)
    try:
        sessions, questions = [], []
        for k in range(streams):
            stream = random_stream(8000 + k, minutes=minutes)
            s = engine.open_stream(f"bench-{k}", method="rekv", options={"n_local": 48, "topk": 4})
            for i in range(stream.n_frames):
                s.push_frame(render_stream_frame(stream, i), i / stream.fps)
            sessions.append(s)
            questions.append([q["question"] for q in needle_questions(stream)][:4] or ["What colour was shown?"])
        rows = []
        for name in ("transformers", "vllm"):
            measure(engine, sessions, questions, 1, 1, max_tokens, name)  # warm-up
            for c in concurrency:
                rows.append(measure(engine, sessions, questions, c, rounds, max_tokens, name))
                r = rows[-1]
                log(f"{name:12s} c={c:3d}  {r['questions_per_s']:6.2f} q/s  {r['tokens_per_s']:7.1f} tok/s  "
                    f"TTFT p50 {r['ttft_p50_s']:.3f} s  p99 {r['ttft_p99_s']:.3f} s")
        return {"bench": "answer-engines", "model": model, "streams": streams, "minutes": minutes,
                "max_tokens": max_tokens, "rounds": rounds, "engine_start_s": start_s, "rows": rows,
                "summary": summary(rows)}
    finally:
        engine.close()


def skip_reason(model: str, family: str) -> str | None:
    """Why the vLLM comparison cannot run here (None: it can)."""
    from streamvqa.answering.vllm_engine import FAMILIES
    from streamvqa.answering.vllm_process import vllm_python

    if family not in FAMILIES:
        return f"the vllm answer engine serves the default model; {model} is of the {family} family"
    if vllm_python() is None:
        return "no .venv-vllm (run `bash tools/setup.sh --vllm`): the vllm answer engine is not installed"
    return None


def section(cfg) -> dict:
    """`streamvqa bench [--quick]`'s answer-engines section: both engines, 1 and 16 questions in
    flight over `cfg.answer_streams` streams, reusing the run's main model."""
    from bench.common import engine

    if not cfg.answer_engines:
        return {"skipped": "disabled"}
    adapter = engine(cfg.model).adapter
    reason = skip_reason(cfg.model, adapter.family)
    if reason:
        return {"skipped": reason}
    return compare(cfg.model, adapter, streams=cfg.answer_streams, minutes=cfg.answer_minutes,
                   concurrency=tuple(cfg.answer_concurrency), rounds=cfg.answer_rounds, max_tokens=cfg.max_tokens,
                   log=lambda line: print(f"bench: answer_engines: {line}", flush=True))


def run(args: argparse.Namespace) -> dict:
    return compare(args.model, streams=args.streams, minutes=args.minutes, concurrency=tuple(args.concurrency),
                   rounds=args.rounds, max_tokens=args.max_tokens, threads=args.threads,
                   log=lambda line: print(line, flush=True))


def add_parser(sub) -> None:
    p = sub.add_parser("answer-engines", help="transformers vs vllm answer engines: questions/s, tokens/s, TTFT")
    p.add_argument("--model", default="default")
    p.add_argument("--streams", type=int, default=4)
    p.add_argument("--minutes", type=float, default=0.3, help="length of each needle stream")
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16])
    p.add_argument("--rounds", type=int, default=2, help="batches of `concurrency` questions measured")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--threads", type=int, default=None, help="torch threads of this process")
    p.add_argument("--json", dest="engines_json", metavar="OUT", help="write the result JSON here")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    write_json(args.engines_json, run(args))
    return 0
