"""PNG plots of one result dict (matplotlib, Agg backend) into a directory."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def encoding(result: dict, out: Path) -> str:
    rows = result["encoding"]["per_preset"]
    labels = [f"{r['method']}\n{r['model']}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, len(rows) * 1.1), 4))
    bottom = [0.0] * len(rows)
    for key, name in (("vision_s_per_frame", "vision"), ("prefill_s_per_frame", "prefill"),
                      ("retention_s_per_frame", "capture + store + retention")):
        vals = [r[key] * 1e3 for r in rows]
        ax.bar(labels, vals, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_yscale("log")
    ax.set_ylabel("ms per frame (log)")
    ax.set_title("Encoding cost per frame, split by stage")
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    return _save(fig, out / "encoding.png")


def questions(result: dict, out: Path) -> str:
    rows = result["questions"]["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        x = [r["stream_s"] / 60 for r in mine]
        axes[0].plot(x, [r["ttft_s"] * 1e3 for r in mine], "o-", label=method)
        axes[1].plot(x, [r["total_s"] * 1e3 for r in mine], "o-", label=method)
    for ax, title in zip(axes, ("time to first token", "total answer latency"), strict=True):
        ax.set_xlabel("stream length (minutes at 1 fps)")
        ax.set_ylabel("ms")
        ax.set_title(f"{title} ({result['questions']['model']})")
        ax.legend(fontsize=8)
    return _save(fig, out / "questions.png")


def memory(result: dict, out: Path) -> str:
    rows = result["memory"]["rows"]
    tiers = sorted({t for r in rows for t in r["kv_bytes"]})
    fig, axes = plt.subplots(1, len(tiers), figsize=(5 * len(tiers), 4), squeeze=False)
    for ax, tier in zip(axes[0], tiers, strict=True):
        for method in dict.fromkeys(r["method"] for r in rows):
            mine = [r for r in rows if r["method"] == method]
            ax.plot([r["stream_s"] / 60 for r in mine], [r["kv_bytes"].get(tier, 0) / 2**20 for r in mine],
                    "o-", label=method)
        ax.set_xlabel("stream length (minutes at 1 fps)")
        ax.set_ylabel("MiB")
        ax.set_title(f"KV bytes in tier '{tier}'")
        ax.legend(fontsize=8)
    return _save(fig, out / "memory.png")


def accuracy(result: dict, out: Path) -> str | None:
    acc = result.get("accuracy", {})
    if "per_method" not in acc:
        return None
    methods = list(acc["per_method"])
    types = sorted({t for m in acc["per_method"].values() for t in m["per_type"]})
    fig, ax = plt.subplots(figsize=(max(6, len(types) * 1.6), 4))
    width = 0.8 / max(1, len(methods))
    for i, m in enumerate(methods):
        vals = [acc["per_method"][m]["per_type"].get(t, 0.0) for t in types]
        ax.bar([k + i * width for k in range(len(types))], vals, width, label=m)
    ax.set_xticks([k + width * (len(methods) - 1) / 2 for k in range(len(types))], types, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title(f"Needle accuracy per question type ({acc['model']}, {acc['minutes']} min streams)")
    ax.legend(fontsize=8)
    return _save(fig, out / "accuracy.png")


def transfers(result: dict, out: Path) -> str | None:
    rows = result.get("transfers", {}).get("rows")
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.barh([f"{r['tier']} {r['op']}" for r in rows], [r["MB_per_s"] for r in rows])
    ax.set_xscale("log")
    ax.set_xlabel("MB/s (log)")
    ax.set_title("KV block transfers")
    return _save(fig, out / "transfers.png")


def all_plots(result: dict, out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for fn in (encoding, questions, memory, accuracy, transfers):
        try:
            p = fn(result, out)
        except (KeyError, ValueError) as e:  # a skipped or empty section
            print(f"bench: no {fn.__name__} plot: {e}")
            continue
        if p:
            made.append(p)
    return made
