"""Markdown tables of one result dict, one per section."""

from __future__ import annotations

from bench.common import markdown_table


def _mib(n: float | None) -> float | None:
    return None if n is None else n / 2**20


def tables(result: dict) -> dict[str, str]:
    out: dict[str, str] = {}
    enc = result.get("encoding", {})
    if enc:
        out["encoding"] = markdown_table([
            {"model": r["model"], "method": r["method"], "frames": r["frames"], "frames/s": r["frames_per_s"],
             "vision ms/f": r["vision_s_per_frame"] * 1e3, "prefill ms/f": r["prefill_s_per_frame"] * 1e3,
             "retention+store ms/f": r["retention_s_per_frame"] * 1e3}
            for r in enc["per_preset"]
        ]) + "\n" + markdown_table([
            {"model": r["model"], "method": r["method"], "sessions": r["sessions"], "frames/s (all)": r["frames_per_s"],
             "frames/s per stream": r["frames_per_s_per_stream"], "speedup vs 1": r["speedup_vs_1"]}
            for r in enc["multi_stream"]
        ])
    sc = result.get("scale", {})
    if sc:
        out["scale"] = scale_tables(sc)
    q = result.get("questions", {})
    if q:
        out["questions"] = markdown_table([
            {"model": r["model"], "method": r["method"], "stream min": r["stream_s"] / 60, "TTFT ms": r["ttft_s"] * 1e3,
             "total ms": r["total_s"] * 1e3, "retrieval ms": (r["retrieval_s"] or 0) * 1e3,
             "blocks/layer": r["retrieved_blocks"]}
            for r in q["rows"]
        ])
    mem = result.get("memory", {})
    if mem:
        tiers = sorted({t for r in mem["rows"] for t in r["kv_bytes"]})
        out["memory"] = markdown_table([
            {"method": r["method"], "stream min": r["stream_s"] / 60,
             **{f"{t} MiB": _mib(r["kv_bytes"].get(t, 0)) for t in tiers},
             **{f"{t} blocks": r["kv_blocks"].get({"device": "window"}.get(t, t), 0) for t in tiers},
             "window tokens": r["window_tokens"]}
            for r in mem["rows"]
        ]) + f"\nPeak RSS of the bench process: {_mib(mem['peak_rss_bytes']):,.0f} MiB\n"
    acc = result.get("accuracy", {})
    if "per_method" in acc:
        out["accuracy"] = markdown_table([
            {"method": m, "n": v["n"], "accuracy": v["accuracy"], "evidence recall": v["evidence_recall"],
             "agreement w/ full": v["agreement_with_full"], "KL(full‖m) first token": v["kl_vs_full_mean"],
             **{f"acc {t}": a for t, a in v["per_type"].items()}}
            for m, v in acc["per_method"].items()
        ])
    elif acc:
        out["accuracy"] = f"skipped: {acc.get('skipped')}\n"
    base = result.get("baselines", {})
    if "offline" in base:
        off = base["offline"]
        out["baselines"] = (
            f"Offline baseline (a): {off['frames_sampled']} of {off['stream_frames']} frames re-encoded per question, "
            f"{off['mean_total_s'] * 1e3:,.0f} ms per question, KV {_mib(off['kv_bytes']):.1f} MiB, "
            f"accuracy {off['accuracy']:.2f}\n\n"
            + markdown_table([
                {"method": m, "ms per question": v["mean_total_s"] * 1e3,
                 "offline latency / method": v["latency_ratio_offline_over_method"],
                 "device KV MiB": _mib(v["kv_bytes_device"]),
                 "method KV / offline KV": v["memory_ratio_method_over_offline"],
                 "accuracy − full": v["accuracy_minus_full"]}
                for m, v in base["vs_offline"].items()
            ])
        )
    elif base:
        out["baselines"] = f"skipped: {base.get('skipped')}\n"
    tr = result.get("transfers", {})
    if tr.get("rows"):
        out["transfers"] = markdown_table([
            {"tier": r["tier"], "op": r["op"], "MB/s": r["MB_per_s"], "× memcpy": r["ratio_vs_memcpy"]}
            for r in tr["rows"]
        ])
    ae = result.get("answer_engines", {})
    if ae.get("rows"):
        out["answer engines"] = markdown_table([
            {"engine": r["engine"], "in flight": r["concurrency"], "questions/s": r["questions_per_s"],
             "tokens/s": r["tokens_per_s"], "TTFT p50 s": r["ttft_p50_s"], "TTFT p99 s": r["ttft_p99_s"],
             "latency p50 s": r["latency_p50_s"]}
            for r in ae["rows"]
        ]) + "".join(f"- {e}: {v['concurrency'][1]} in flight / 1: latency p50 {v['latency_p50_ratio']:.2f}x, "
                     f"TTFT p50 {v['ttft_p50_ratio']:.2f}x\n" for e, v in ae["summary"].items())
    elif ae:
        out["answer engines"] = f"skipped: {ae.get('skipped')}\n"
    return out


def scale_tables(sc: dict) -> str:
    """Capacity (streams pushing flat out) and live streams at 1 fps, batched vs unbatched."""
    cap = markdown_table([
        {"model": r["model"], "mode": r["mode"], "streams": r["streams"], "frames/s (all)": r["frames_per_s"]}
        for r in sc["capacity"]
    ])
    live = markdown_table([
        {"model": r["model"], "mode": r["mode"], "streams": r["streams"], "frames/s (all)": r["frames_per_s"],
         "lag p50 s": r["lag_p50_s"], "lag p99 s": r["lag_p99_s"], "dropped": r["dropped"],
         "mean batch": r["mean_batch"], "TTFT encoding ms": (r["ttft_encoding_s"] or 0) * 1e3,
         "TTFT idle ms": r["ttft_idle_s"] * 1e3, "frames/s during question": r["frames_per_s_during_question"],
         "held": r["held"]}
        for r in sc["live"]
    ])
    summary = "\n".join(
        f"- {m}: 8 streams batched / unbatched = {v['batched_over_unbatched_8_streams']:.2f}x; streams held in "
        f"real time: batched {v['streams_held']['batched']}, unbatched {v['streams_held']['unbatched']}"
        for m, v in sc["summary"].items())
    return cap + "\n" + live + "\n" + summary + "\n"


def markdown(result: dict) -> str:
    parts = [f"# streamvqa bench ({'quick' if result['config']['quick'] else 'full'}), {result['started']}\n"]
    for name, table in tables(result).items():
        parts.append(f"## {name}\n\n{table}")
    return "\n".join(parts)
