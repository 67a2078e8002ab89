"""Streaming needle QA: N-minute synthetic streams at 1 fps through the engine, one method.

Each stream is rendered (by default written as H.264 MP4 and decoded back, as ingest would
see it), pushed frame by frame into an engine session of the chosen method, and the needle
questions are asked at the end: "What colour was the star that appeared?", "What digit was
shown most recently?", "What appeared first, the circle or the square?", "Where did ... appear?".

    streamvqa eval needle --method full --minutes 10 [--streams 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from streamvqa.cliargs import json_object
from streamvqa.evals.common import add_engine_args, normalise, per_type, table, write_json
from streamvqa.synth.streams import Stream, needle_questions, random_stream, render_stream_frame, write_stream

EVAL_SEED = 7_000


def stream_frames(stream: Stream, via_mp4: bool) -> list[tuple[np.ndarray, float]]:
    """(frame, t) at the stream's fps, decoded from an MP4 round trip when `via_mp4`."""
    if not via_mp4:
        return [(render_stream_frame(stream, i), i / stream.fps) for i in range(stream.n_frames)]
    import av

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "s.mp4"
        write_stream(stream, path)
        with av.open(str(path)) as c:
            return [(f.to_ndarray(format="rgb24"), float(f.time)) for f in c.decode(video=0)]


def overlaps(evidence: list[tuple[float, float]], truth: list[list[float]]) -> bool:
    """Whether the answer's evidence ranges cover every ground-truth evidence range."""
    return all(any(lo < e_hi and e_lo < hi for e_lo, e_hi in evidence) for lo, hi in truth)


def evaluate(engine, method: str, options: dict | None, minutes: float, n_streams: int, seed: int,
             via_mp4: bool = True, fps: float = 1.0) -> dict:
    rows: list[dict] = []
    encode_s, n_frames = 0.0, 0
    for k in range(n_streams):
        stream = random_stream(seed + k, minutes=minutes, fps=fps)
        frames = stream_frames(stream, via_mp4)
        sid = f"needle-{seed + k}"
        session = engine.open_stream(sid, method=method, options=options)
        try:
            t0 = time.perf_counter()
            for img, t in frames:
                session.push_frame(img, t)
            encode_s += time.perf_counter() - t0
            n_frames += len(frames)
            for q in needle_questions(stream):
                ans = session.answer(q["question"], max_tokens=8)
                rows.append({
                    "stream": seed + k, "type": q["type"], "question": q["question"], "answer": q["answer"],
                    "prediction": ans.text, "correct": normalise(ans.text) == normalise(q["answer"]),
                    "evidence_truth": q["evidence"], "evidence": [list(e) for e in ans.evidence],
                    "evidence_hit": overlaps(ans.evidence, q["evidence"]), "total_s": ans.timings.get("total_s"),
                })
        finally:
            engine.close_stream(sid)
    types = per_type(rows)
    overall = sum(r["correct"] for r in rows) / max(1, len(rows))
    return {
        "eval": "needle", "method": method, "options": options or {}, "minutes": minutes, "fps": fps,
        "streams": n_streams, "accuracy": overall, "n": len(rows), "per_type": types,
        "evidence_recall": sum(r["evidence_hit"] for r in rows) / max(1, len(rows)),
        "encode_frames_per_s": n_frames / encode_s if encode_s else None, "rows": rows,
    }


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="streamvqa eval needle", description=__doc__.splitlines()[0])
    p.add_argument("--method", default="full", help="method preset (see `streamvqa methods`)")
    p.add_argument("--options", type=json_object, default=None, help="method options as JSON, e.g. '{\"topk\": 8}'")
    p.add_argument("--minutes", type=float, default=10.0, help="stream length in minutes (default 10)")
    p.add_argument("--streams", type=int, default=3, help="number of streams (default 3)")
    p.add_argument("--fps", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=EVAL_SEED)
    p.add_argument("--no-mp4", action="store_true", help="feed rendered frames instead of decoded H.264")
    add_engine_args(p)
    return p


def run(args: argparse.Namespace) -> int:
    if args.minutes <= 0 or args.streams < 1 or args.fps <= 0:
        print("streamvqa eval needle: --minutes, --streams and --fps must be positive", file=sys.stderr)
        return 2
    from streamvqa.engine import Engine, EngineConfig

    engine = Engine(EngineConfig(model=args.model, threads=args.threads, device=args.device))
    try:
        result = evaluate(engine, args.method, args.options, args.minutes, args.streams, args.seed,
                          via_mp4=not args.no_mp4, fps=args.fps)
    finally:
        engine.close()
    result["model"] = engine.model_info()
    print(f"method {args.method}, {args.streams} x {args.minutes:g} min at {args.fps:g} fps, "
          f"encode {result['encode_frames_per_s'] or 0:.2f} frames/s, evidence recall {result['evidence_recall']:.3f}")
    print(table(result["per_type"], result["accuracy"], result["n"]))
    write_json(args.json, result)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
