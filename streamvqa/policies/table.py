"""`streamvqa methods` as a compact table: one row per preset, one column per stage's policy."""

from __future__ import annotations

import re
from typing import Any

STAGES = ("unit", "pre-LLM", "encoding", "retention", "retrieval", "positions")


def paper(description: str) -> str:
    """'ReKV (arXiv 2503.00540): ...' -> 'ReKV 2503.00540'; 'Baseline: ...' -> 'baseline'."""
    m = re.match(r"(.+?) \(arXiv ([\d.]+)", description)
    if m:
        return f"{m.group(1)} {m.group(2)}"
    return description.split(":")[0].lower()


def stage_names(p: dict[str, Any]) -> tuple[str, ...]:
    """Short names of a preset's policy at each of :data:`STAGES` (from its MethodConfig fields)."""
    if p["units"] == "semantic":
        unit = "segment" + ("+summary" if p["summary"] else "")
    else:
        unit = "frame" if p["unit_frames"] == 1 else f"clip-{p['unit_frames']}"
    if p["frame_filter"] is not None:
        unit += f" merge>{p['frame_filter']:g}" + (" per token" if p["frame_filter_by"] == "tokens" else "")
    if p["encode_on"] == "memory":
        encoding = "memory"
    else:
        encoding = "all" if p["n_local"] is None else f"window-{p['n_local']}"
    retention = p["retention"]
    if p["memory_tokens"] is not None:
        retention += f" {p['memory_tokens']}"
    if p["demote"]:
        retention += " +demote"
    retrieval, r = p["retrieval"], p["retrieval_options"]
    if retrieval in ("rekv", "rekv-external", "input-match") and r.get("topk") is not None:  # the others size their own
        adaptive = r.get("score_mass") is not None
        retrieval += f" top-{r['min_blocks']}..{r['topk']}" if adaptive else f" top-{r['topk']}"
    if p.get("answer_from") == "inputs":  # the answer recomputed from the chosen units' inputs
        retrieval += " +recompute"
    return unit, p["reduction"], encoding, retention, retrieval, p["positions"]


def methods_table(presets: list[dict[str, Any]]) -> str:
    """The text of `streamvqa methods` for :func:`streamvqa.policies.presets.describe`'s list."""
    rows = [("method", "paper", *STAGES)]
    for m in presets:
        name = m["name"] + (" *" if m.get("default") else "")
        rows.append((name, paper(m["description"]), *stage_names(m["policies"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    aliases = [f"{a} = {m['name']}" for m in presets for a in m.get("aliases", [])]
    lines.append("* default method. " + (f"Aliases: {', '.join(aliases)}. " if aliases else "")
                 + "Every field: streamvqa methods --json; docs/methods.md.")
    return "\n".join(lines)
