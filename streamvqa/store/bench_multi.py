"""Question latency in the multi-process topology vs embedded mode, and block reads across
processes (kvstore lease + shared-memory map) vs in-process.

`run(...)` builds one stream of synthetic frames in each mode (same model, same frames), asks
the same questions in both, and reports per mode the first-token and total latency seen by the
caller (the server side of the API) and the engine's own timings; for multi it adds the cost of
the extra hops (`overhead_*`). It also times `RemoteStore.get_many` (lease, map, copy, release:
what the answer worker does per question) against `TieredStore.get_many` in one process.

    python -m streamvqa.store.bench_multi [--model tiny:smolvlm] [--frames 16] [--questions 5] --json OUT

Figures in seconds (p50 and mean over questions) and MB/s (1e6 B/s). Nothing is asserted.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np

QUESTIONS = ["what is shown?", "what colour is the first object?", "how many objects are there?",
             "what happened at the end?", "what moved?"]


def _frames(n: int, size: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (*size, 3), dtype=np.uint8) for _ in range(n)]


def _summary(xs: list[float]) -> dict[str, float]:
    return {"p50": statistics.median(xs), "mean": statistics.fmean(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def _ask_all(session: Any, questions: list[str], max_tokens: int) -> dict[str, Any]:
    first, total, engine_first, engine_total, tokens = [], [], [], [], []
    for q in questions:
        start = time.perf_counter()
        t_first = None
        answer = None
        events = session.events(q, max_tokens=max_tokens)  # the Session protocol, either topology
        for ev in events:
            if t_first is None:
                t_first = time.perf_counter() - start
            answer = ev
        total.append(time.perf_counter() - start)
        first.append(t_first if t_first is not None else total[-1])
        engine_first.append(answer.timings.get("first_token_s", 0.0))
        engine_total.append(answer.timings.get("total_s", 0.0))
        tokens.append(len(answer.token_ids))
    return {
        "first_token_s": _summary(first),
        "total_s": _summary(total),
        "engine_first_token_s": _summary(engine_first),
        "engine_total_s": _summary(engine_total),
        "tokens": _summary([float(t) for t in tokens]),
        "token_ids": None,
    }


def _big_blocks(n: int, layers: int = 16, heads: int = 4, tokens: int = 64, dim: int = 64) -> list:
    import torch

    from streamvqa.store.block import Block

    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        k = torch.randn(layers, heads, tokens, dim, generator=g).to(torch.float16)
        out.append(Block("bench-big", i, float(i), float(i) + 0.5, k, k.clone(), torch.arange(tokens).view(1, -1),
                         i * tokens, (i + 1) * tokens, k.float().mean(2).to(torch.float16)))
    return out


def _put_get(store: Any, blocks: list) -> dict[str, Any]:
    nbytes = sum(b.nbytes for b in blocks)
    t = time.perf_counter()
    for b in blocks:
        store.put(b)
    put_s = time.perf_counter() - t
    t = time.perf_counter()
    got = store.get_many("bench-big", [b.index for b in blocks])
    get_s = time.perf_counter() - t
    assert len(got) == len(blocks)
    store.drop_stream("bench-big")
    return {"blocks": len(blocks), "bytes": nbytes, "put_MBps": nbytes / put_s / 1e6, "get_MBps": nbytes / get_s / 1e6,
            "get_ms_per_block": get_s / len(blocks) * 1000}


def run(model: str = "tiny:smolvlm", n_frames: int = 16, n_questions: int = 5, max_tokens: int = 16,
        size: tuple[int, int] = (96, 128), threads: int | None = 1, device: str = "cpu",
        method: str = "rekv", options: dict | None = None) -> dict[str, Any]:
    from streamvqa.engine import Engine, EngineConfig
    from streamvqa.workers.multi.config import MultiConfig
    from streamvqa.workers.multi.facade import MultiEngine
    from streamvqa.workers.multi.remote_store import RemoteStore

    options = options or {}
    big_blocks = _big_blocks(16)
    frames = _frames(n_frames, size)
    questions = (QUESTIONS * (n_questions // len(QUESTIONS) + 1))[:n_questions]
    host = {"kind": "host", "budget_bytes": 1 << 30, "shm_prefix": "svqbench"}
    out: dict[str, Any] = {"model": model, "device": device, "frames": n_frames, "frame_size": list(size),
                           "questions": n_questions, "max_tokens": max_tokens, "method": method, "options": options}

    # both modes live at once and questions alternate between them, so machine load drifts
    # (other processes on a shared host) hit both alike
    cfg = MultiConfig(model=model, encoder_device=device, answer_device=device, threads=threads,
                      run_dir=tempfile.mkdtemp(prefix="svq-"), store={"tiers": [host]})
    t = time.perf_counter()
    multi = MultiEngine(cfg)
    out["multi_start_s"] = time.perf_counter() - t
    # embedded: the same TieredStore (host shm tier) in-process, so only the hops differ
    emb = Engine(EngineConfig(model=model, device=device, threads=threads,
                              store={"tiers": [{**host, "shm_prefix": "svqbenche"}]}))
    try:
        sessions = {"embedded": emb.open_stream("bench", method, options),
                    "multi": multi.open_stream("bench", method, options)}
        for mode, s in sessions.items():
            t = time.perf_counter()
            for i, f in enumerate(frames):
                s.push_frame(f, i * 0.5)
            out[f"{mode}_encode_s_per_frame"] = (time.perf_counter() - t) / n_frames
            _ask_all(s, questions[:1], max_tokens)  # warm-up
        runs: dict[str, list[dict]] = {"embedded": [], "multi": []}
        for q in questions:
            for mode, s in sessions.items():
                runs[mode].append(_ask_all(s, [q], max_tokens))
        for mode, s in sessions.items():
            out[mode] = {k: _summary([r[k]["p50"] for r in runs[mode]])
                         for k in ("first_token_s", "total_s", "engine_first_token_s", "engine_total_s", "tokens")}
            out[mode]["token_ids"] = [s.answer(q, max_tokens=max_tokens).token_ids for q in questions[:2]]
        fingerprint = emb.adapter.fingerprint()
        idx = list(range(n_frames))
        t = time.perf_counter()
        blocks = emb.store.get_many("bench", idx)
        dt = time.perf_counter() - t
        nbytes = sum(b.nbytes for b in blocks)
        out["read_in_process"] = {"blocks": len(blocks), "bytes": nbytes, "seconds": dt, "MBps": nbytes / dt / 1e6}
        reader = RemoteStore(multi.supervisor.workers["kvstore"].client, fingerprint, cfg.shm_prefix)
        reader.get_many("bench", [0])  # connect
        t = time.perf_counter()
        blocks = reader.get_many("bench", idx)
        dt = time.perf_counter() - t
        nbytes = sum(b.nbytes for b in blocks)
        out["read_cross_process"] = {"blocks": len(blocks), "bytes": nbytes, "seconds": dt, "MBps": nbytes / dt / 1e6}
        # ~1 MiB blocks (a 7B model's 16 tokens, bf16-sized): put and get through each path
        out["big_blocks"] = {"in_process": _put_get(emb.store, big_blocks),
                             "cross_process": _put_get(reader, big_blocks)}
    finally:
        emb.close()
        multi.close()

    e, m = out["embedded"], out["multi"]
    out["overhead_first_token_s_p50"] = m["first_token_s"]["p50"] - e["first_token_s"]["p50"]
    out["overhead_total_s_p50"] = m["total_s"]["p50"] - e["total_s"]["p50"]
    out["same_tokens"] = e["token_ids"] == m["token_ids"]
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny:smolvlm")
    p.add_argument("--device", default="cpu")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--questions", type=int, default=5)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write the result here (else stdout)")
    args = p.parse_args(argv)
    if args.frames < 1 or args.questions < 1 or args.max_tokens < 1:
        print("bench_multi: --frames, --questions and --max-tokens must be >= 1", file=sys.stderr)
        return 2
    result = run(args.model, args.frames, args.questions, args.max_tokens, threads=args.threads, device=args.device)
    text = json.dumps(result, indent=1)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
