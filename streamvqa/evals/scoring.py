"""Evidence scoring: how much of the truth an answer's evidence covers, and how much of it is relevant.

Truth ranges are [start, end) in seconds (an event shown from `start` for end - start seconds);
an answer's evidence ranges are closed [first frame, last frame] of the blocks its cache was
built from (a one-frame block is [t, t]). Both are compared on the frames of the stream at its
fps, so a zero-length range still counts as the one frame it holds.
"""

from __future__ import annotations

import math
from collections import defaultdict


def evidence_frames(evidence: list[tuple[float, float]] | list[list[float]], fps: float) -> set[int]:
    """Frame numbers inside the closed evidence ranges."""
    out: set[int] = set()
    for a, b in evidence:
        out.update(range(math.ceil(a * fps - 1e-6), math.floor(b * fps + 1e-6) + 1))
    return out


def truth_frames(truth: list[list[float]], fps: float) -> set[int]:
    """Frame numbers inside the half-open truth ranges."""
    out: set[int] = set()
    for lo, hi in truth:
        out.update(range(math.ceil(lo * fps - 1e-6), math.ceil(hi * fps - 1e-6)))
    return out


def evidence_scores(evidence, truth: list[list[float]], fps: float) -> dict[str, float]:
    """recall: share of the truth ranges that at least one evidence frame falls in;
    precision: share of the evidence frames that fall in a truth range (0 when there is none)."""
    ev = evidence_frames(evidence, fps)
    ranges = [truth_frames([r], fps) for r in truth]
    relevant = set().union(*ranges) if ranges else set()
    recall = sum(bool(ev & r) for r in ranges) / len(ranges) if ranges else 0.0
    precision = len(ev & relevant) / len(ev) if ev else 0.0
    return {"recall": recall, "precision": precision}


def summarise(rows: list[dict], group: str) -> dict[str, dict]:
    """{value of `group`: {n, correct, accuracy}} over the rows scored on their answer."""
    acc: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        if r.get("scored", "answer") == "answer":
            acc[str(r[group])].append(int(r["correct"]))
    return {k: {"n": len(v), "correct": sum(v), "accuracy": sum(v) / len(v)} for k, v in sorted(acc.items())}


def evidence_summary(rows: list[dict]) -> dict[str, float | int]:
    """Mean evidence recall and precision over the rows that have truth ranges."""
    scored = [r for r in rows if r.get("evidence_truth") and r.get("evidence_recall") is not None]
    n = len(scored)
    return {"n": n,
            "recall": sum(r["evidence_recall"] for r in scored) / n if n else 0.0,
            "precision": sum(r["evidence_precision"] for r in scored) / n if n else 0.0}
