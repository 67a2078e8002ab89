"""Questions: time to first token and total latency versus stream length, per preset.

One session per preset is fed a synthetic stream; at each length of `sweep_seconds` the same
question is asked and `session.stats()` is recorded (the memory section reads those stats).
"""

from __future__ import annotations

import time

from bench.common import engine, frames, presets
from bench.config import BenchConfig

QUESTION = "What digit was shown most recently?"


def sweep(model: str, method: str, seconds: list[float], fps: float, max_tokens: int, seed: int = 21) -> list[dict]:
    """Grow one stream through every length in `seconds`; a question and the stats at each."""
    eng = engine(model)
    lengths = sorted(int(round(s * fps)) for s in seconds)
    sid = f"bench-sweep-{method}"
    session = eng.open_stream(sid, method=method)
    rows: list[dict] = []
    pushed = 0
    try:
        data = frames(seed, lengths[-1], fps)
        for n in lengths:
            t0 = time.perf_counter()
            while pushed < n:
                session.push_frame(*next(data))
                pushed += 1
            encode_wall = time.perf_counter() - t0
            ans = session.answer(QUESTION, max_tokens=max_tokens)
            st = session.stats()
            rows.append({
                "model": model, "method": method, "stream_s": n / fps, "frames": n,
                "ttft_s": ans.timings["first_token_s"], "total_s": ans.timings["total_s"],
                "retrieval_s": ans.timings.get("retrieval_s"), "prefill_s": ans.timings.get("prefill_s"),
                "tokens": len(ans.token_ids), "retrieved_blocks": ans.retrieved_blocks,
                "encode_wall_s": encode_wall,
                "kv_bytes": dict(st.kv_bytes), "kv_blocks": dict(st.kv_blocks),
                "window_tokens": st.window_tokens,
            })
    finally:
        eng.close_stream(sid)
    return rows


def run(cfg: BenchConfig) -> dict:
    rows = []
    for method in presets(cfg.presets):
        rows += sweep(cfg.sweep_model, method, cfg.sweep_seconds, cfg.fps, cfg.max_tokens)
    return {"model": cfg.sweep_model, "question": QUESTION, "rows": rows}
