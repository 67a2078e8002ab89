"""`streamvqa` command line. Every command exits non-zero with a one-line reason on bad input."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path


def _ask_file(args: argparse.Namespace) -> int:
    from streamvqa.engine import Engine, EngineConfig
    from streamvqa.workers.ingest import IngestConfig
    from streamvqa.workers.ingest.offline import read_video

    video = Path(args.video)
    if not video.is_file():
        raise SystemExit(f"streamvqa: no such video file: {video}")
    options = json.loads(args.options) if args.options else None
    engine = Engine(EngineConfig(model=args.model, device=args.device, dtype=args.dtype))
    session = engine.open_stream("file", method=args.method, options=options)
    start = time.perf_counter()
    frames = 0
    for frame in read_video(IngestConfig(url=str(video.resolve()), fps=args.fps, max_width=640, max_height=480)):
        session.push_frame(frame.image, frame.t)
        frames += 1
    encode_s = time.perf_counter() - start
    answer = session.answer(args.question, max_tokens=args.max_tokens)
    stats = session.stats()
    result = {
        "question": args.question,
        "answer": answer.text,
        "evidence": answer.evidence,
        "timings": {**answer.timings, "encode_s": encode_s},
        "frames": frames,
        "method": args.method,
        "model": engine.model_info(),
        "kv_bytes": stats.kv_bytes,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"answer:   {answer.text}")
        print("evidence: " + ", ".join(f"{a:.1f}-{b:.1f}s" for a, b in answer.evidence))
        print(f"frames:   {frames} encoded in {encode_s:.2f} s ({frames / max(encode_s, 1e-9):.1f} fps)")
        print("timings:  " + ", ".join(f"{k}={v * 1000:.0f} ms" for k, v in answer.timings.items()))
    return 0


def _methods(args: argparse.Namespace) -> int:
    from streamvqa.policies.presets import describe

    presets = describe()
    if args.json:
        print(json.dumps(presets, indent=2))
    else:
        for p in presets:
            print(f"{p['name']:16s} {p['description']}")
            print(" " * 17 + ", ".join(f"{k}={v}" for k, v in p["policies"].items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamvqa", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    ask = sub.add_parser("ask-file", help="encode a video file as a stream and answer one question")
    ask.add_argument("video")
    ask.add_argument("question")
    ask.add_argument("--method", default="rekv")
    ask.add_argument("--options", help="JSON object overriding the method's policies")
    ask.add_argument("--fps", type=float, default=1.0)
    ask.add_argument("--model", default="default")
    ask.add_argument("--device", default="cpu")
    ask.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ask.add_argument("--max-tokens", type=int, default=64)
    ask.add_argument("--json", action="store_true")
    ask.set_defaults(func=_ask_file)

    methods = sub.add_parser("methods", help="list method presets and their stage policies")
    methods.add_argument("--json", action="store_true")
    methods.set_defaults(func=_methods)

    for module in ("streamvqa.server.cli", "streamvqa.evals.cli", "bench.cli"):
        try:
            mod = __import__(module, fromlist=["add_parsers"])
        except ImportError:
            continue
        mod.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from streamvqa.server.allocator import configure

    configure()  # glibc malloc set up before any thread starts (docs/deploy.md, "Memory allocator")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from transformers.utils import logging as hf_logging

    from streamvqa.engine import EngineError
    from streamvqa.workers.ingest import IngestError

    hf_logging.disable_progress_bar()  # keep stderr to one line per error

    try:
        return int(args.func(args) or 0)
    except (EngineError, IngestError) as e:
        print(f"streamvqa: {e.code}: {e.message if hasattr(e, 'message') else e}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as e:
        print(f"streamvqa: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
