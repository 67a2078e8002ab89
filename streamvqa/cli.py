"""`streamvqa` command line. Every command exits non-zero with a one-line reason on bad input."""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from pathlib import Path

from streamvqa.cliargs import (
    EXIT_RUNTIME,
    EXIT_USAGE,
    Parser,
    UsageError,
    check_device,
    fail,
    json_object,
    one_line,
    positive_float,
    positive_int,
)

EXIT_CODES = ("exit codes: 0 done; 1 a runtime failure (e.g. a video that cannot be decoded, a server error); "
              "2 a usage error (a bad flag or value, an unknown method, bad --options, a missing file)")


def _ask_file(args: argparse.Namespace) -> int:
    from streamvqa.policies.presets import MethodError, canonical, resolve

    video = Path(args.video)
    if not video.is_file():
        raise UsageError("video", f"no such video file: {video}")
    method = canonical(args.method)
    try:  # before the model loads: a bad --method / --options is a usage error, found at once
        resolve(method, args.options)
    except MethodError as e:
        raise UsageError("--options" if e.code == "invalid_options" else "--method", f"{e.code}: {e}") from None

    from streamvqa.engine import Engine, EngineConfig
    from streamvqa.workers.ingest import IngestConfig
    from streamvqa.workers.ingest.offline import read_video

    decoded = read_video(IngestConfig(url=str(video.resolve()), fps=args.fps, max_width=640, max_height=480))
    first = next(decoded, None)  # opens the file before the model loads: a bad video fails at once
    engine = Engine(EngineConfig(model=args.model, device=args.device, dtype=args.dtype))
    session = engine.open_stream("file", method=method, options=args.options)
    start = time.perf_counter()
    frames = 0
    for frame in itertools.chain([] if first is None else [first], decoded):
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
        "method": method,
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
    from streamvqa.policies.table import methods_table

    presets = describe()
    print(json.dumps(presets, indent=2) if args.json else methods_table(presets))
    return 0


def _sample(args: argparse.Namespace) -> int:
    from streamvqa.server.sample import write_sample

    print(write_sample(Path(args.out), seconds=args.seconds, seed=args.seed))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="streamvqa", description=__doc__, epilog=EXIT_CODES)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    ask = sub.add_parser("ask-file", help="encode a video file as a stream and answer one question")
    ask.add_argument("video")
    ask.add_argument("question")
    ask.add_argument("--method", default="rekv", help="method preset (`streamvqa methods`; default rekv)")
    ask.add_argument("--options", type=json_object, help="JSON object overriding the method's policies")
    ask.add_argument("--fps", type=positive_float, default=1.0, help="frames sampled per second (default 1)")
    ask.add_argument("--model", default="default")
    ask.add_argument("--device", default="cpu")
    ask.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ask.add_argument("--max-tokens", type=positive_int, default=64)
    ask.add_argument("--json", action="store_true")
    ask.set_defaults(func=_ask_file)

    methods = sub.add_parser("methods", help="list method presets and their stage policies")
    methods.add_argument("--json", action="store_true", help="every field of every preset, as JSON")
    methods.set_defaults(func=_methods)

    sample = sub.add_parser("sample", help="write a synthetic sample video the default model can answer about")
    sample.add_argument("--out", default="sample.mp4", help="the MP4 to write (its questions go beside it, .json)")
    sample.add_argument("--seconds", type=positive_float, default=60.0, help="length (default 60)")
    sample.add_argument("--seed", type=int, default=7, help="which random sample (default 7)")
    sample.set_defaults(func=_sample)

    for module in ("streamvqa.server.cli", "streamvqa.evals.cli", "bench.cli", "streamvqa.models.cli"):
        try:
            mod = __import__(module, fromlist=["add_parsers"])
        except ImportError:
            continue
        mod.add_parsers(sub)
    return parser


# Engine error codes that mean the command line was wrong (exit 2); any other code is a runtime failure.
USAGE_CODES = frozenset({"unknown_method", "invalid_options", "invalid_request", "question_too_long",
                         "budget_too_small"})


def main(argv: list[str] | None = None) -> int:
    from streamvqa.server.allocator import configure

    configure()  # glibc malloc set up before any thread starts (docs/deploy.md, "Memory allocator")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from transformers.utils import logging as hf_logging

    from streamvqa.engine import EngineError
    from streamvqa.models.loading import ModelLoadError
    from streamvqa.workers.ingest import IngestError

    hf_logging.disable_progress_bar()  # keep stderr to one line per error

    prog = f"streamvqa {args.command}"
    try:
        check_device(getattr(args, "device", None))  # every command's --device, before anything loads
        return int(args.func(args) or 0)
    except UsageError as e:
        return fail(prog, f"error: {e}", EXIT_USAGE)
    except ModelLoadError as e:  # every command's --model: no such directory, an unsupported family
        return fail(prog, f"error: argument --model: {one_line(e)}", EXIT_USAGE)
    except EngineError as e:
        return fail(prog, f"{e.code}: {one_line(e)}", EXIT_USAGE if e.code in USAGE_CODES else EXIT_RUNTIME)
    except IngestError as e:
        return fail(prog, f"{e.code}: {one_line(e).removeprefix(e.code + ': ')}", EXIT_RUNTIME)
    except (ValueError, OSError, RuntimeError) as e:
        return fail(prog, one_line(e), EXIT_RUNTIME)


if __name__ == "__main__":
    sys.exit(main())
