"""`streamvqa models`: the supported model families, what each needs and how each is verified."""

from __future__ import annotations

import json


def _models(args) -> int:
    from streamvqa.models.catalog import describe

    rows = describe()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['model_type']:16s} {r['checkpoints']}")
        for key in ("positions", "unit_layout", "needs", "verified"):
            print(f"{'':16s} {key}: {r[key]}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("models", help="list supported model families, what each needs, how each is verified")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_models)
