"""What a failover and a forwarded request cost, measured on this machine (docs/scaling.md):

    PYTHONPATH=$PWD .venv/bin/python -m streamvqa.cluster.bench --json OUT [--lease 5] [--asks 5]

Starts a redis-server (AOF) and two replicas (grounded default model, auth off), plays a
real-time needle file (a red star at t 3..8 s) on r1, asks it directly and through r2 (REST,
median latency each), then `kill -9`s r1 and measures: seconds until the stream runs on r2,
the stream time lost (between the last frame r1 took and where r2 resumed "at live", ×fps =
frames),
and whether the needle question is still answered right, with evidence from before the kill.
Prints the figures and writes them as JSON. Every process it starts is stopped by its PID.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from .local import LocalRedis, LocalReplica, wait_until, write_needle


def _ask(rep: LocalReplica, sid: str, question: str) -> tuple[float, dict[str, Any]]:
    t = time.perf_counter()
    r = httpx.post(f"{rep.url}/v1/streams/{sid}/questions", json={"question": question, "temperature": 0},
                   timeout=120)
    r.raise_for_status()
    return time.perf_counter() - t, r.json()


def run(lease_s: float, asks: int, fps: float, work: Path) -> dict[str, Any]:
    media = work / "media"
    media.mkdir()
    needle = write_needle(media, 60.0)
    (work / "redis").mkdir()
    server = LocalRedis(work / "redis").start()
    env = {"STREAMVQA_AUTH": "off", "STREAMVQA_MEDIA_ROOT": str(media), "STREAMVQA_DEFAULT_METHOD": "rekv"}
    reps = [LocalReplica(f"r{i}", server.url, work, env, lease_s) for i in (1, 2)]
    try:
        for r in reps:
            r.start()
        for r in reps:
            if not wait_until(r.ready, 300):
                raise RuntimeError(f"replica {r.name} did not get ready:\n{r.tail()}")
        r1, r2 = reps
        resp = httpx.post(r1.url + "/v1/streams", json={"url": needle["file"], "fps": fps},
                          headers={"X-Streamvqa-Forwarded": "bench"}, timeout=60)  # pinned on r1
        resp.raise_for_status()
        sid = resp.json()["id"]

        def info(rep: LocalReplica) -> dict[str, Any]:
            return httpx.get(f"{rep.url}/v1/streams/{sid}", timeout=30).json()

        if not wait_until(lambda: info(r1)["frames_encoded"] >= 12 * fps, 120):
            raise RuntimeError("the stream did not encode 12 s")
        direct = [_ask(r1, sid, needle["question"])[0] for _ in range(asks)]
        forwarded = [_ask(r2, sid, needle["question"])[0] for _ in range(asks)]
        before = info(r2)
        r1.kill()
        killed = time.monotonic()
        moved = wait_until(lambda: info(r2)["state"] == "running" and info(r2)["frames_encoded"] > 0, 120, 0.1)
        failover_s = time.monotonic() - killed if moved else None
        rec = {k.decode(): v.decode() for k, v in
               redis.Redis.from_url(server.url).hgetall(f"svqa-cluster:stream:{sid}").items()}
        _, answer = _ask(r2, sid, needle["question"])
        lo, hi = needle["evidence"]
        ev = [(e["t_start"], e["t_end"]) for e in answer["evidence"]]
        resumed = float(rec.get("adopted_resume_t", "nan"))
        lost = resumed - float(before["last_frame_t"] or 0.0)  # never decoded: r1 was dead, r2 not yet there
        return {
            "lease_s": lease_s, "fps": fps,
            "question_direct_median_s": statistics.median(direct),
            "question_forwarded_median_s": statistics.median(forwarded),
            "forwarding_overhead_ms": 1000 * (statistics.median(forwarded) - statistics.median(direct)),
            "failover_s": failover_s, "stream_time_lost_s": lost, "frames_lost": round(lost * fps),
            "stream_t_at_kill": before["last_frame_t"], "encode_lag_s_at_kill": before["encode_lag_s"],
            "last_stored_t": float(rec.get("adopted_last_t", "nan")),
            "resumed_at_t": resumed,
            "blocks_in_redis_before_kill": before["memory_blocks"].get("redis", 0),
            "blocks_adopted": int(rec.get("adopted_blocks", 0)),
            "answer": answer["answer"], "correct": answer["answer"].strip().lower() == needle["answer"],
            "evidence_before_kill": any(a < hi and lo < b for a, b in ev)
            and all(b <= before["last_frame_t"] + 1.0 for a, b in ev if a < hi and lo < b),
            "epoch": int(rec.get("epoch", 0)),
        }
    finally:
        for r in reps:
            r.stop()
        server.kill()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--lease", type=float, default=5.0, help="cluster_lease_s (default 5)")
    p.add_argument("--asks", type=int, default=5, help="questions per route for the latency medians")
    p.add_argument("--fps", type=float, default=1.0)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="svq-cluster-bench-") as d:
        figures = run(args.lease, args.asks, args.fps, Path(d))
    for k, v in figures.items():
        print(f"{k:28s} {v:.3f}" if isinstance(v, float) else f"{k:28s} {v}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if figures["correct"] and figures["failover_s"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
