"""Shared helpers of the evals: answer normalisation, per-type tables, JSON output."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path


def add_engine_args(p) -> None:
    """The engine and output flags every eval task takes."""
    p.add_argument("--model", default="default", help="engine model (default: the grounded default model)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--json", default=None, metavar="OUT", help="write the result as JSON")


def normalise(text: str) -> str:
    """Exact match up to case, surrounding whitespace and a trailing full stop; centre == center."""
    t = text.strip().lower().rstrip(".").strip()
    return "centre" if t == "center" else t


def per_type(rows: list[dict]) -> dict[str, dict]:
    """{type: {n, correct, accuracy}} from rows with `type` and `correct`."""
    acc: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        acc[r["type"]].append(int(r["correct"]))
    return {k: {"n": len(v), "correct": sum(v), "accuracy": sum(v) / len(v)} for k, v in sorted(acc.items())}


def table(types: dict[str, dict], overall: float, n: int) -> str:
    lines = [f"{'type':<14} {'n':>5} {'accuracy':>9}", "-" * 30]
    lines += [f"{k:<14} {v['n']:>5} {v['accuracy']:>9.3f}" for k, v in types.items()]
    lines += ["-" * 30, f"{'overall':<14} {n:>5} {overall:>9.3f}"]
    return "\n".join(lines)


def write_json(path: str | None, result: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=2) + "\n")
