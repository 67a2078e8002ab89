"""Memory: KV bytes per tier versus stream length per preset (from the questions sweep's
`session.stats()`), bytes per block per tier, and the peak RSS of the bench process."""

from __future__ import annotations

from bench.common import peak_rss_bytes

# session.stats() names the hot tier "device" in kv_bytes and "window" in kv_blocks
_BLOCK_TIER = {"device": "window"}


def run(sweep: dict) -> dict:
    rows = []
    for r in sweep["rows"]:
        per_block = {}
        for tier, nbytes in r["kv_bytes"].items():
            n = r["kv_blocks"].get(_BLOCK_TIER.get(tier, tier), 0)
            per_block[tier] = nbytes / n if n else None
        rows.append({
            "model": r["model"], "method": r["method"], "stream_s": r["stream_s"], "frames": r["frames"],
            "kv_bytes": r["kv_bytes"], "kv_blocks": r["kv_blocks"], "bytes_per_block": per_block,
            "kv_bytes_total": sum(r["kv_bytes"].values()), "window_tokens": r["window_tokens"],
        })
    return {"rows": rows, "peak_rss_bytes": peak_rss_bytes()}
