"""`streamvqa models`: the supported model families, what each needs and how each is verified."""

from __future__ import annotations

import json


def _models(args) -> int:
    from streamvqa.models.catalog import describe

    if args.measure:
        return _measure(args)

    rows = describe()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['model_type']:16s} {r['checkpoints']}")
        for key in ("positions", "unit_layout", "needs", "verified"):
            print(f"{'':16s} {key}: {r[key]}")
    return 0


def _measure(args) -> int:
    from pathlib import Path

    from streamvqa.models.sizes import REKV_GIB_PER_HOUR, SIZES, run

    names = args.only or list(SIZES)
    unknown = [n for n in names if n not in SIZES]
    if unknown:
        print(f"unknown checkpoint(s) {unknown}; one of {list(SIZES)}")
        return 2
    rows = run(names, frames=args.frames, max_gb=args.max_gb, dtype=args.dtype)
    print(f"reference: ReKV reports {REKV_GIB_PER_HOUR} GB of KV per hour for LLaVA-OV-7B at 0.5 fps")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "rekv_gib_per_hour": REKV_GIB_PER_HOUR}, indent=2))
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("models", help="list supported model families, what each needs, how each is verified")
    p.add_argument("--json", action="store_true")
    p.add_argument("--measure", action="store_true",
                   help="measure KV bytes per frame / hour, encode time and first token at the published sizes")
    p.add_argument("--only", action="append", metavar="CHECKPOINT", help="with --measure: this checkpoint (repeatable)")
    p.add_argument("--frames", type=int, default=4, help="with --measure: frames streamed per checkpoint")
    p.add_argument("--max-gb", type=float, default=8.0,
                   help="with --measure: larger models are measured as their attention geometry (KV only)")
    p.add_argument("--dtype", default="float32", choices=["bfloat16", "float32"],
                   help="with --measure: the dtype timed (KV per hour is reported at 16 bits)")
    p.add_argument("--out", help="with --measure: write the rows as JSON here")
    p.set_defaults(func=_models)
