"""Accuracy: the synthetic streaming needle set with the main model, per preset and question type.

For every preset: accuracy per question type, evidence recall (the answer's evidence covers the
needle's time), and fidelity to `full` on the same streams: answer agreement and the KL divergence
KL(full || preset) of the first token's distribution. Skipped (with a reason) when
`streamvqa.synth` or `streamvqa.evals.needle` are missing.
"""

from __future__ import annotations

import time

import torch

from bench.common import Probe, engine, presets
from bench.config import BenchConfig

SEED = 7_500


def _kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> float:
    p = torch.log_softmax(p_logits.float(), -1)
    q = torch.log_softmax(q_logits.float(), -1)
    return float((p.exp() * (p - q)).sum())


def run(cfg: BenchConfig) -> dict:
    try:
        from streamvqa.evals.common import normalise
        from streamvqa.evals.needle import overlaps, stream_frames
        from streamvqa.synth import needle_questions, random_stream
    except ImportError as e:
        return {"skipped": f"needle eval unavailable: {e}"}
    eng = engine(cfg.model)
    probe = Probe(eng.adapter)
    methods = presets(cfg.presets)
    rows: list[dict] = []
    encode: dict[str, float] = {m: 0.0 for m in methods}
    n_frames = 0
    for k in range(cfg.needle_streams):
        stream = random_stream(SEED + k, minutes=cfg.needle_minutes, fps=cfg.fps)
        data = stream_frames(stream, via_mp4=False)
        n_frames += len(data)
        qs = needle_questions(stream)
        for method in methods:
            sid = f"bench-needle-{method}-{k}"
            session = eng.open_stream(sid, method=method)
            try:
                t0 = time.perf_counter()
                for img, t in data:
                    session.push_frame(img, t)
                encode[method] += time.perf_counter() - t0
                stats = session.stats()
                for qi, q in enumerate(qs):
                    with probe.active():
                        probe.reset()
                        ans = session.answer(q["question"], max_tokens=cfg.max_tokens)
                    rows.append({
                        "stream": k, "q": qi, "method": method, "type": q["type"], "answer": q["answer"],
                        "prediction": ans.text, "correct": normalise(ans.text) == normalise(q["answer"]),
                        "evidence_hit": overlaps(ans.evidence, q["evidence"]),
                        "total_s": ans.timings["total_s"], "ttft_s": ans.timings["first_token_s"],
                        "kv_bytes_device": stats.kv_bytes.get("device", 0),
                        "_logits": probe.first_logits,
                    })
            finally:
                eng.close_stream(sid)
    # fidelity to `full` on the same stream and question
    full = {(r["stream"], r["q"]): r for r in rows if r["method"] == "full"}
    for r in rows:
        f = full.get((r["stream"], r["q"]))
        r["agrees_with_full"] = None if f is None else normalise(r["prediction"]) == normalise(f["prediction"])
        lf, lr = (f or {}).get("_logits"), r["_logits"]
        r["kl_vs_full"] = _kl(lf, lr) if lf is not None and lr is not None else None
    for r in rows:
        r.pop("_logits")
    per_method = {}
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        types = sorted({r["type"] for r in mine})
        kls = [r["kl_vs_full"] for r in mine if r["kl_vs_full"] is not None]
        agree = [r["agrees_with_full"] for r in mine if r["agrees_with_full"] is not None]
        per_method[m] = {
            "n": len(mine),
            "accuracy": sum(r["correct"] for r in mine) / max(1, len(mine)),
            "per_type": {t: sum(r["correct"] for r in mine if r["type"] == t)
                         / max(1, sum(r["type"] == t for r in mine)) for t in types},
            "evidence_recall": sum(r["evidence_hit"] for r in mine) / max(1, len(mine)),
            "agreement_with_full": sum(agree) / len(agree) if agree else None,
            "kl_vs_full_mean": sum(kls) / len(kls) if kls else None,
            "mean_total_s": sum(r["total_s"] for r in mine) / max(1, len(mine)),
            "mean_ttft_s": sum(r["ttft_s"] for r in mine) / max(1, len(mine)),
            "kv_bytes_device": max((r["kv_bytes_device"] for r in mine), default=0),
            "encode_frames_per_s": n_frames / encode[m] if encode[m] else None,
        }
    return {"model": cfg.model, "minutes": cfg.needle_minutes, "streams": cfg.needle_streams,
            "seed": SEED, "per_method": per_method, "rows": rows}
