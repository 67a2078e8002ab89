"""Scale: how many live streams one device holds, batched across streams against unbatched.

For each model (the tiny one and the main one) and each mode, in the same run:
- ``batched``: the encode scheduler batching up to 16 streams per forward (the server's way);
- ``unbatched``: the same scheduler with ``max_batch=1`` (one stream's unit per forward, as
  before issue 19), the same shedding rule.

Two measurements per mode:
- **capacity**: 1 and 8 streams, each from its own thread, pushing frames as fast as they are
  taken: aggregate encoded frames/s (the device's throughput);
- **live**: 1, 2, 4, 8, 16 streams at 1 fps in real time (each with its own phase, like
  unsynchronised cameras), each behind a drop-oldest queue of 8 frames like ingest's: aggregate
  encoded frames/s, per-frame lag (sampled -> encoded) p50/p99, frames dropped (queue full or
  shed by the scheduler), and whether the streams are **held in real time** (p99 lag < 2 s and
  no frame dropped). Halfway through, a question is asked on stream 0 while the others encode:
  its TTFT, against the same question's TTFT on an idle engine afterwards, and the frames/s
  encoded while it ran (both ways: questions do not wait for the backlog, encoding goes on).
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import numpy as np

from bench.common import engine, frames
from bench.config import BenchConfig
from streamvqa.engine.encode_scheduler import EncodeScheduler, SchedulerConfig

MODES = {"batched": 16, "unbatched": 1}
QUEUE = 8  # frames a stream buffers before its oldest is dropped (ingest's default queue size)
HELD_LAG_S = 2.0
QUESTION = "What is shown?"


def _use(eng, max_batch: int) -> EncodeScheduler:
    eng.scheduler = EncodeScheduler(eng.lock, SchedulerConfig(max_batch=max_batch), eng.observers)
    return eng.scheduler


def _images(n_streams: int, n: int) -> list[list[np.ndarray]]:
    return [[img for img, _ in frames(200 + k, n)] for k in range(n_streams)]


def capacity(model: str, max_batch: int, n_streams: int, n_frames: int) -> dict:
    eng = engine(model)
    sched = _use(eng, max_batch)
    sessions = [eng.open_stream(f"bench-cap-{k}", method="rekv") for k in range(n_streams)]
    images = _images(n_streams, n_frames)
    try:
        def feed(session, imgs):
            for i, img in enumerate(imgs):
                sched.encode(session, img, float(i))

        threads = [threading.Thread(target=feed, args=a) for a in zip(sessions, images, strict=True)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    finally:
        for s in sessions:
            eng.close_stream(s.stream_id)
    total = sched.stats.frames_encoded
    return {"streams": n_streams, "frames": total, "frames_per_s": total / wall, "batches": dict(sched.stats.batches)}


def live(model: str, max_batch: int, n_streams: int, seconds: float, fps: float, max_tokens: int) -> dict:
    """`n_streams` live streams at `fps` for `seconds`; a question on stream 0 halfway."""
    eng = engine(model)
    sched = _use(eng, max_batch)
    n = max(1, int(seconds * fps))
    sessions = [eng.open_stream(f"bench-live-{k}", method="rekv") for k in range(n_streams)]
    images = _images(n_streams, min(n, 8))
    queue_drops = [0] * n_streams
    rng = np.random.default_rng(0)
    phases = rng.random(n_streams) / fps
    start = time.monotonic() + 0.2
    stop = threading.Event()

    def feed(k: int) -> None:
        session = sessions[k]
        for i in range(n):
            due = start + phases[k] + i / fps  # when the camera's frame i is sampled
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            elif now - due > QUEUE / fps:  # it would have left the ingest queue already
                queue_drops[k] += 1
                continue
            sched.encode(session, images[k][i % len(images[k])], i / fps, arrival=due)
        if k == 0:
            stop.set()

    threads = [threading.Thread(target=feed, args=(k,)) for k in range(n_streams)]
    for t in threads:
        t.start()
    ttft = during = None
    time.sleep(0.2 + seconds / 2)
    if sessions[0].stats().frames_encoded:
        before, t0 = sched.stats.frames_encoded, time.monotonic()
        ttft = sessions[0].answer(QUESTION, max_tokens=max_tokens).timings["first_token_s"]
        # the other way round: encoding goes on while the question runs
        during = (sched.stats.frames_encoded - before) / (time.monotonic() - t0)
    for t in threads:
        t.join()
    wall = time.monotonic() - start
    idle_ttft = sessions[0].answer(QUESTION, max_tokens=max_tokens).timings["first_token_s"]
    for s in sessions:
        eng.close_stream(s.stream_id)
    st = sched.stats
    lags = np.array(st.lags) if st.lags else np.zeros(1)
    dropped = sum(queue_drops) + sum(st.frames_dropped.values())
    p99 = float(np.quantile(lags, 0.99))
    return {
        "streams": n_streams, "frames": n * n_streams, "frames_encoded": st.frames_encoded,
        "frames_per_s": st.frames_encoded / wall, "lag_p50_s": float(np.quantile(lags, 0.5)), "lag_p99_s": p99,
        "dropped": dropped, "dropped_queue": sum(queue_drops), "dropped_shed": sum(st.frames_dropped.values()),
        "ttft_encoding_s": ttft, "ttft_idle_s": idle_ttft, "frames_per_s_during_question": during,
        "held": bool(p99 < HELD_LAG_S and dropped == 0),
        "mean_batch": (sum(k * v for k, v in st.batches.items()) / sum(st.batches.values())) if st.batches else None,
    }


def run(cfg: BenchConfig, log=print) -> dict:
    rows, cap = [], []
    for model, cap_frames in ((cfg.tiny_model, cfg.scale_capacity_frames), (cfg.model, cfg.scale_capacity_frames_main)):
        for mode, max_batch in MODES.items():
            capacity(model, max_batch, 2, 1)  # warm-up (first-call allocations)
            for k in (1, 8):
                cap.append({"model": model, "mode": mode, **capacity(model, max_batch, k, cap_frames)})
                log(f"scale: capacity {cap[-1]}", flush=True)
            for k in cfg.scale_streams:
                rows.append({"model": model, "mode": mode,
                             **live(model, max_batch, k, cfg.scale_seconds, cfg.fps, cfg.max_tokens)})
                log(f"scale: live {rows[-1]}", flush=True)
    summary = {}
    for model in dict.fromkeys(r["model"] for r in cap):
        fps = {(r["mode"], r["streams"]): r["frames_per_s"] for r in cap if r["model"] == model}
        held = {mode: max([r["streams"] for r in rows if r["model"] == model and r["mode"] == mode and r["held"]],
                          default=0) for mode in MODES}
        summary[model] = {
            "batched_over_unbatched_8_streams": fps[("batched", 8)] / fps[("unbatched", 8)],
            "streams_held": held,
        }
    return {"capacity": cap, "live": rows, "summary": summary}


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.scale [--quick] [--model M] [--json OUT]``: this section alone."""
    p = argparse.ArgumentParser(prog="python -m bench.scale")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--model", default="default")
    p.add_argument("--json", dest="json_out")
    args = p.parse_args(argv)
    from bench.common import close_engines
    from bench.report import scale_tables

    cfg = BenchConfig.quick_config(args.model) if args.quick else BenchConfig.full_config(args.model)
    try:
        result = run(cfg)
    finally:
        close_engines()
    print(scale_tables(result))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
