"""Every preset at equal memory: the hard set at a sweep of `kv_budget`s, with references.

For each budget (a share of what `full` holds for the stream, or tokens/bytes) every method runs
with its options mapped to that hot-memory budget (`evals/budget.py`); `full` (unbounded, the
offline full-memory answer) and `oracle` (evidence frames only) run once, and `uniform` (the
offline baseline: uniformly sampled frames encoded afresh per question) at each budget as the floor. Writes a JSON table
and a plot of accuracy against hot memory, one curve per preset, the Pareto front marked.

    streamvqa eval sweep --minutes 3 --budgets 10%,25% --json OUT.json --plot OUT.png     (CI size)
    streamvqa eval sweep --minutes 30 --budgets 2.5%,5%,10%,25% --json ... --plot ...    (benchmark)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from streamvqa.evals.budget import UNSUPPORTED
from streamvqa.evals.common import write_json
from streamvqa.evals.hard import FLOORS, evaluate, prepared, report
from streamvqa.synth.hard import HARD_SEED

METHODS = ("sliding-window", "rekv", "streamkv", "infinipot-v", "streammem", "livevlm", "streamingtom",
           "streamingvlm", "resv", "hybrid", "hybrid-kv", "hybrid-v1")
REFERENCES = ("full", "oracle")
KEEP = ("method", "kv_budget", "budget_tokens", "budget_bytes", "hot_peak_tokens", "hot_peak_bytes",
        "within_budget", "store_bytes", "accuracy", "n", "per_type", "per_distance", "evidence", "evidence_when",
        "no_answers", "per_objects", "yes_no", "ttft_median_s", "seconds", "options")


def pareto(points: list[dict]) -> list[dict]:
    """Budgeted points no other point beats: at most its hot bytes with more accuracy, or fewer
    bytes with at least its accuracy."""
    def beaten(p: dict) -> bool:
        return any((q["hot_peak_bytes"] <= p["hot_peak_bytes"] and q["accuracy"] > p["accuracy"])
                   or (q["hot_peak_bytes"] < p["hot_peak_bytes"] and q["accuracy"] >= p["accuracy"]) for q in points)
    return [p for p in points if not beaten(p)]


def sweep(engine, methods: list[str], budgets: list[str], datas: list[dict], references: bool = True,
          progress=None) -> dict:
    rows: list[dict] = []

    def keep(result: dict) -> dict:
        row = {k: result.get(k) for k in KEEP}
        if progress:
            progress(result, row)
        return row

    if references:
        for ref in REFERENCES:
            rows.append(keep(evaluate(engine, ref, None, datas)))
    for budget in budgets:
        for method in [*methods, *(FLOORS if references else ())]:
            rows.append(keep(evaluate(engine, method, None, datas, budget)))
    return finish(rows, methods, budgets, [d["seed"] for d in datas], [d["full_tokens"] for d in datas])


def finish(rows: list[dict], methods: list[str], budgets: list[str], seeds: list[int],
           full_tokens: list[int] | None = None) -> dict:
    """Pareto front and leaders per budget over the rows."""
    # the floor is a reference, not a contender: off the front and out of the leaders
    points = [r for r in rows if r["kv_budget"] is not None and r["method"] not in FLOORS]
    front = {(r["method"], r["kv_budget"]) for r in pareto(points)}
    for r in rows:
        r["pareto"] = (r["method"], r["kv_budget"]) in front
    leaders = {}
    for budget in budgets:
        # a run over its budget (hybrid-v1) held more memory than the others: not a leader
        at = [r for r in points if r["kv_budget"] == budget and r["within_budget"] is not False]
        if at:
            best = max(r["accuracy"] for r in at)
            leaders[budget] = sorted(r["method"] for r in at if r["accuracy"] == best)
    return {"eval": "sweep", "methods": methods, "budgets": budgets, "streams": seeds,
            "full_tokens": full_tokens, "rows": rows, "leaders": leaders}


def markdown(result: dict) -> str:
    """The sweep as a Markdown table: one row per (budget, method), references first."""
    buckets = sorted({b for r in result["rows"] for b in r["per_distance"]} - {"none"},
                     key=lambda b: ["now", "1m", "5m", "15m", "45m"].index(b))
    head = ["method", "budget", "hot peak (tok / MiB)", "store MiB", "accuracy", *buckets,
            "\"no\" acc", "multi-object acc", "ev. recall", "ev. precision", "TTFT s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        no = r["no_answers"]
        no_n = sum(v["n"] for v in no.values())
        no_acc = sum(v["correct"] for v in no.values()) / no_n if no_n else 0.0
        multi = (r.get("per_objects") or {}).get("multi")  # absent in logs written before the split
        hot = (f"{r['hot_peak_tokens']} / {r['hot_peak_bytes'] / 2**20:.1f}" if r["hot_peak_tokens"] is not None
               else "-")
        cells = [r["method"] + (" *" if r.get("pareto") else ""), r["kv_budget"] or "-", hot,
                 f"{r['store_bytes'] / 2**20:.1f}" if r["store_bytes"] is not None else "-", f"{r['accuracy']:.3f}",
                 *[f"{r['per_distance'][b]['accuracy']:.2f}" if b in r["per_distance"] else "-" for b in buckets],
                 f"{no_acc:.2f}", f"{multi['accuracy']:.2f}" if multi else "-", f"{r['evidence']['recall']:.2f}", f"{r['evidence']['precision']:.2f}",
                 f"{r['ttft_median_s']:.2f}" if r["ttft_median_s"] is not None else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> Path:
    """Accuracy against hot memory (MiB, log), one curve per preset, Pareto front ringed,
    references as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    ax.set_prop_cycle(color=plt.cm.tab20.colors)  # more presets than the default ten colours
    points = [r for r in result["rows"] if r["kv_budget"] is not None and r["method"] not in FLOORS]
    for method in result["methods"]:
        mine = sorted((r for r in points if r["method"] == method), key=lambda r: r["hot_peak_bytes"])
        ax.plot([r["hot_peak_bytes"] / 2**20 for r in mine], [r["accuracy"] for r in mine], "o-", label=method,
                linewidth=2.5 if method == "hybrid" else 1.2)
    front = sorted((r for r in points if r.get("pareto")), key=lambda r: r["hot_peak_bytes"])
    ax.plot([r["hot_peak_bytes"] / 2**20 for r in front], [r["accuracy"] for r in front], "o", markersize=12,
            markerfacecolor="none", markeredgecolor="black", label="Pareto front")
    floor = sorted((r for r in result["rows"] if r["method"] in FLOORS), key=lambda r: r["hot_peak_bytes"])
    if floor:
        ax.plot([r["hot_peak_bytes"] / 2**20 for r in floor], [r["accuracy"] for r in floor], "s-.", color="grey",
                label=f"{floor[0]['method']} (offline floor)")
    for r, style in zip((r for r in result["rows"] if r["kv_budget"] is None), ("--", ":"), strict=False):
        ax.axhline(r["accuracy"], color="grey", linestyle=style, label=f"{r['method']} (reference)")
    ax.set_xscale("log")
    ax.set_xlabel("hot KV memory held (MiB, log)")
    ax.set_ylabel("accuracy (answer-scored questions)")
    ax.set_title(f"Hard streaming set, {result.get('minutes', '?')}-minute stream(s): accuracy at equal memory")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="streamvqa eval sweep", description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated presets")
    p.add_argument("--budgets", default="5%,10%", help="comma-separated kv budgets (default 5%%,10%%)")
    p.add_argument("--minutes", type=float, default=3.0, help="stream length (default 3: the CI size)")
    p.add_argument("--streams", type=int, default=1)
    p.add_argument("--seed", type=int, default=HARD_SEED)
    p.add_argument("--no-references", action="store_true", help="skip full, oracle and the uniform floor")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, metavar="OUT", help="write the table as JSON")
    p.add_argument("--plot", default=None, metavar="PNG", help="write the plot")
    p.add_argument("--log", default=None, metavar="JSONL", help="append each finished run as a JSON line")
    p.add_argument("--from-log", default=None, metavar="JSONL[,JSONL]",
                   help="build the table and plot from runs logged by --log, or written by `eval hard --json` "
                        "(runs split over processes)")
    return p


def logged_rows(path: str) -> list[dict]:
    """The rows of a `--log` file (one JSON line a run) or of one `eval hard --json` result."""
    text = Path(path).read_text()
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict):  # a single run written by `streamvqa eval hard --json`
        return [{k: whole.get(k) for k in KEEP}]
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def from_logs(paths: list[str], methods: list[str], budgets: list[str]) -> dict:
    """The sweep's result from logged rows (the last row of each method and budget wins)."""
    rows: dict[tuple, dict] = {}
    for path in paths:
        for r in logged_rows(path):
            rows[(r["method"], r["kv_budget"])] = r
    refs = [rows[(m, None)] for m in REFERENCES if (m, None) in rows]
    runs = [rows[(m, b)] for b in budgets for m in [*methods, *FLOORS] if (m, b) in rows]
    return finish(refs + runs, methods, budgets, [])


def run(args: argparse.Namespace) -> int:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    budgets = [b.strip() for b in args.budgets.split(",") if b.strip()]
    bad = [m for m in methods if m in UNSUPPORTED or m in REFERENCES or m in FLOORS]
    if bad or not methods or not budgets or args.minutes <= 0 or args.streams < 1:
        print(f"streamvqa eval sweep: need methods (not {', '.join(bad) or 'none'}), budgets and positive --minutes",
              file=sys.stderr)
        return 2
    if args.from_log:
        result = from_logs(args.from_log.split(","), methods, budgets)
        return emit(result, args)
    from streamvqa.engine import Engine, EngineConfig
    from streamvqa.engine.errors import EngineError

    datas = [prepared(args.seed + k, args.minutes) for k in range(args.streams)]

    def progress(result: dict, row: dict) -> None:
        print(report(result), flush=True)
        if args.log:
            with open(args.log, "a") as f:
                f.write(json.dumps(row) + "\n")

    engine = Engine(EngineConfig(threads=args.threads, device=args.device))
    try:
        result = sweep(engine, methods, budgets, datas, not args.no_references, progress)
    except (ValueError, EngineError) as e:
        print(f"streamvqa eval sweep: {e}", file=sys.stderr)
        return 2
    finally:
        engine.close()
    result["streams"] = [d["seed"] for d in datas]
    return emit(result, args)


def emit(result: dict, args: argparse.Namespace) -> int:
    result["minutes"] = args.minutes
    print(markdown(result))
    print("leaders per budget:", json.dumps(result["leaders"]))
    write_json(args.json, result)
    if args.plot:
        plot(result, Path(args.plot))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
