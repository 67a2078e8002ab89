"""Baselines in the same run. (a) offline transformers: N uniformly sampled frames of the needle
stream re-encoded with the question on every question (`adapter.model.generate`), what a user
without a streaming server does; (b) `full` and (c) `sliding-window` are presets measured by every
other section. Ratios: offline latency / preset latency, preset KV bytes / offline KV bytes."""

from __future__ import annotations

import time

import numpy as np
import torch

from bench.common import engine
from bench.config import BenchConfig


def offline_kv_bytes(adapter, seq_len: int) -> int:
    """KV cache bytes of one offline forward over `seq_len` tokens (keys + values, all layers)."""
    elem = torch.empty((), dtype=adapter.dtype).element_size()
    return 2 * adapter.n_layers * adapter.n_kv_heads * adapter.head_dim * seq_len * elem


def run(cfg: BenchConfig, accuracy: dict) -> dict:
    try:
        from streamvqa.evals.common import normalise
        from streamvqa.evals.needle import stream_frames
        from streamvqa.synth import needle_questions, random_stream
    except ImportError as e:
        return {"skipped": f"synthetic streams unavailable: {e}"}
    from bench.accuracy import SEED

    adapter = engine(cfg.model).adapter
    stream = random_stream(SEED, minutes=cfg.needle_minutes, fps=cfg.fps)
    data = stream_frames(stream, via_mp4=False)
    idx = np.unique(np.linspace(0, len(data) - 1, min(cfg.offline_frames, len(data))).round().astype(int))
    sampled = [data[i] for i in idx]
    rows = []
    for q in needle_questions(stream)[:3]:
        t0 = time.perf_counter()
        with torch.inference_mode():
            inputs = adapter.reference_inputs(sampled, q["question"])
            out = adapter.model.generate(**inputs, max_new_tokens=cfg.max_tokens, do_sample=False)
        seconds = time.perf_counter() - t0
        text = adapter.tokenizer.decode(out[0].tolist(), skip_special_tokens=True).strip()
        seq_len = int(next(v for v in inputs.values() if hasattr(v, "shape")).shape[1])
        rows.append({"type": q["type"], "answer": q["answer"], "prediction": text,
                     "correct": normalise(text) == normalise(q["answer"]), "total_s": seconds,
                     "seq_len": seq_len, "kv_bytes": offline_kv_bytes(adapter, seq_len)})
    offline_s = sum(r["total_s"] for r in rows) / max(1, len(rows))
    offline_kv = max((r["kv_bytes"] for r in rows), default=0)
    ratios = {}
    for method, m in accuracy.get("per_method", {}).items():
        ratios[method] = {
            "mean_total_s": m["mean_total_s"],
            "latency_ratio_offline_over_method": offline_s / m["mean_total_s"] if m["mean_total_s"] else None,
            "kv_bytes_device": m["kv_bytes_device"],
            "memory_ratio_method_over_offline": m["kv_bytes_device"] / offline_kv if offline_kv else None,
            "accuracy_minus_full": (m["accuracy"] - accuracy["per_method"]["full"]["accuracy"]
                                    if "full" in accuracy["per_method"] else None),
        }
    return {
        "offline": {"model": cfg.model, "frames_sampled": len(sampled), "stream_frames": len(data),
                    "mean_total_s": offline_s, "kv_bytes": offline_kv,
                    "accuracy": sum(r["correct"] for r in rows) / max(1, len(rows)), "rows": rows},
        "vs_offline": ratios,
    }
