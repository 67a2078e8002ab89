"""One benchmark run: every section in one process, then JSON, Markdown and plots."""

from __future__ import annotations

import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from bench import accuracy, answer_engines, baselines, encoding, memory, questions, scale, transfers
from bench.common import close_engines, engine, presets, unavailable
from bench.config import BenchConfig

RESULTS = Path(__file__).resolve().parent / "results"


def run(cfg: BenchConfig, log=print) -> dict:
    """Run every section of `cfg`; returns the result dict (JSON-serialisable)."""
    started = datetime.now(UTC)
    result: dict = {
        "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"), "config": cfg.to_dict(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "threads": torch.get_num_threads()},
        "presets": presets(cfg.presets), "presets_unavailable": unavailable(), "seconds": {},
    }
    try:
        result["models"] = {m: engine(m).model_info() for m in dict.fromkeys((cfg.model, cfg.tiny_model, cfg.sweep_model))}
        steps = [
            ("encoding", lambda: encoding.run(cfg)),
            ("scale", lambda: scale.run(cfg)),
            ("questions", lambda: questions.run(cfg)),
            ("memory", lambda: memory.run(result["questions"])),
            ("accuracy", lambda: accuracy.run(cfg) if cfg.accuracy else {"skipped": "disabled"}),
            ("baselines", lambda: baselines.run(cfg, result["accuracy"]) if cfg.accuracy else {"skipped": "disabled"}),
            ("transfers", lambda: transfers.run(cfg.quick) if cfg.transfers else {"skipped": "disabled"}),
            ("answer_engines", lambda: answer_engines.section(cfg)),
        ]
        for name, fn in steps:
            t0 = time.perf_counter()
            log(f"bench: {name} ...")
            result[name] = fn()
            result["seconds"][name] = time.perf_counter() - t0
            if isinstance(result[name], dict) and "skipped" in result[name]:
                log(f"bench: {name} skipped: {result[name]['skipped']}")
    finally:
        close_engines()
    result["seconds"]["total"] = sum(result["seconds"].values())
    return result


def save(result: dict, name: str | None = None, json_out: str | None = None, plots: bool = True) -> dict:
    """Write `bench/results/<name>.json` (and `json_out`) and the PNG plots; returns the paths."""

    RESULTS.mkdir(parents=True, exist_ok=True)
    name = name or result["started"].replace(":", "").replace("-", "")
    paths = {"json": [str(RESULTS / f"{name}.json")]}
    if json_out:
        paths["json"].append(json_out)
    if plots:
        from bench.plots import all_plots  # matplotlib only when plotting

        result["plots"] = [os.path.relpath(p, RESULTS) for p in all_plots(result, RESULTS)]
    for p in paths["json"]:
        Path(p).parent.mkdir(parents=True, exist_ok=True)
        Path(p).write_text(json.dumps(result, indent=1, default=str))
    paths["plots"] = result.get("plots", [])
    return paths
