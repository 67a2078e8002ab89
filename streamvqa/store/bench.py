"""Transfer throughput of KV blocks per tier: memcpy vs shared memory vs disk vs Redis.

`run(quick)` measures, in one process and one run, for blocks of ~1 MiB (bf16 KV):

- ``memcpy``: a plain copy of the encoded bytes (the baseline every tier is compared with);
- ``encode`` / ``decode``: the block format (CRC32 over header + payload included);
- ``shm``: the host tier (put = create segment + write; get = copy out + decode), and ``shm_map``:
  another mapping of the same segment decoded zero-copy, as an answer process would;
- ``disk``: one file per block, atomic rename, without fsync (and ``disk_fsync`` with);
- ``redis``: one SET per block / pipelined MGET, against a private redis-server (started on a
  free 127.0.0.1 port when the binary exists and no URL is given);
- ``tiered``: `TieredStore` put / get_many over host RAM only (end to end, index included);
- ``durable_redis`` / ``durable_spill``: durable `TieredStore` puts (host RAM + Redis, written
  through to Redis), with Redis up, and with Redis down (every block goes to the spill area).

Figures are bytes per second of encoded block bytes (MB/s = 1e6 B/s). Nothing is asserted.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from streamvqa.store import format as fmt
from streamvqa.store import shm
from streamvqa.store.block import Block
from streamvqa.store.config import (
    DiskTierConfig,
    HostTierConfig,
    RedisTierConfig,
    SpillConfig,
    TieredStoreConfig,
)
from streamvqa.store.keys import BlockKey
from streamvqa.store.tiered import TieredStore
from streamvqa.store.tiers import DiskTier, HostTier, RedisTier

_PREFIX = "svqbench"  # shm segments; the janitor of this prefix cleans crashed runs


def bench_block(index: int, layers: int = 8, heads: int = 4, tokens: int = 64, head_dim: int = 128) -> Block:
    """A bf16 block of layers*heads*tokens*head_dim*2*2 bytes of KV (1 MiB by default)."""
    g = torch.Generator().manual_seed(index)
    keys = torch.randn(layers, heads, tokens, head_dim, generator=g).to(torch.bfloat16)
    values = torch.randn(layers, heads, tokens, head_dim, generator=g).to(torch.bfloat16)
    return Block(
        stream_id="bench",
        index=index,
        t_start=float(index),
        t_end=index + 0.9,
        keys=keys,
        values=values,
        positions=torch.arange(tokens, dtype=torch.int64)[None] + index * tokens,
        pos_start=index * tokens,
        pos_end=(index + 1) * tokens,
        rep_keys=keys.float().mean(2),
    )


def _rate(nbytes: int, seconds: float) -> float:
    return nbytes / seconds if seconds > 0 else float("inf")


def _timed(fn: Callable[[], object], repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _start_redis(tmp: str) -> tuple[subprocess.Popen | None, str | None]:
    exe = shutil.which("redis-server")
    if exe is None:
        return None, None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(200):
        try:
            client.ping()
            client.close()
            return proc, url
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    proc.wait()
    return None, None


def _tier_rates(tier, keys: list[BlockKey], encoded: list[bytearray], batched_get: bool) -> dict:
    total = sum(len(e) for e in encoded)
    tier.put(keys[0], encoded[0])  # warm-up: connections, directories, resource tracker
    tier.delete(keys[0])
    t_put = _timed(lambda: [tier.put(k, e) for k, e in zip(keys, encoded, strict=True)])
    if batched_get:
        t_get = _timed(lambda: [fmt.decode(b) for b in tier.get_many(keys)], repeat=2)
    else:
        t_get = _timed(lambda: [fmt.decode(tier.get(k)) for k in keys], repeat=2)
    return {"put_Bps": _rate(total, t_put), "get_Bps": _rate(total, t_get)}


def run(quick: bool = True, redis_url: str | None = None, tmp_dir: str | None = None) -> dict:
    """Measure and print a table; returns {"block_bytes", "blocks", "results": {name: {...}}}."""
    n = 8 if quick else 48
    blocks = [bench_block(i) for i in range(n)]
    encoded = [fmt.encode(b, "bench") for b in blocks]
    total = sum(len(e) for e in encoded)
    keys = [BlockKey("bench", "bench", i) for i in range(n)]
    results: dict[str, dict] = {}
    repeat = 2 if quick else 3

    # memcpy baseline and the format itself
    t = _timed(lambda: [bytearray(e) for e in encoded], repeat)
    results["memcpy"] = {"copy_Bps": _rate(total, t)}
    t_enc = _timed(lambda: [fmt.encode(b, "bench") for b in blocks], repeat)
    t_dec = _timed(lambda: [fmt.decode(e, copy=True) for e in encoded], repeat)
    t_dec0 = _timed(lambda: [fmt.decode(e, copy=False) for e in encoded], repeat)
    t_crc = _timed(lambda: [fmt.verify(e) for e in encoded], repeat)
    results["format"] = {
        "encode_Bps": _rate(total, t_enc),
        "decode_copy_Bps": _rate(total, t_dec),
        "decode_zero_copy_Bps": _rate(total, t_dec0),
        "verify_crc_Bps": _rate(total, t_crc),
    }

    # shared memory (host tier) and a second mapping decoded zero-copy
    host = HostTier(HostTierConfig(budget_bytes=total * 2, shm_prefix=_PREFIX))
    try:
        results["shm"] = _tier_rates(host, keys, encoded, batched_get=False)
        refs = [host.segment(k) for k in keys]

        def map_all():
            for ref in refs:
                seg = shm.attach_segment(ref.name)
                block = fmt.decode(seg.buf[: ref.length], copy=False)
                del block
                shm.release_segment(seg, unlink=False)

        results["shm_map"] = {"map_decode_Bps": _rate(total, _timed(map_all, repeat))}
    finally:
        host.close()

    with tempfile.TemporaryDirectory(dir=tmp_dir) as tmp:
        for name, fsync in (("disk", False), ("disk_fsync", True)):
            if quick and fsync:
                continue
            disk = DiskTier(DiskTierConfig(path=Path(tmp) / name, budget_bytes=total * 2, fsync=fsync))
            results[name] = _tier_rates(disk, keys, encoded, batched_get=False)

        proc = None
        url = redis_url
        if url is None:
            proc, url = _start_redis(tmp)
        if url is None:
            results["redis"] = {"skipped": "redis-server not installed"}
        else:
            try:
                rt = RedisTier(RedisTierConfig(url=url, budget_bytes=total * 2, key_prefix="svqbench"))
                results["redis"] = _tier_rates(rt, keys, encoded, batched_get=True)
                for k in keys:
                    rt.delete(k)
                rt.close()
                results["durable_redis"] = _durable_put_rate(blocks, total, url, Path(tmp) / "spill-up")
                results["durable_spill"] = _durable_put_rate(blocks, total, _dead_url(), Path(tmp) / "spill")
            finally:
                if proc is not None:
                    proc.kill()
                    proc.wait()

    cfg = TieredStoreConfig(
        fingerprint="bench", tiers=[HostTierConfig(budget_bytes=total * 2, shm_prefix=_PREFIX)]
    )
    store = TieredStore(cfg)
    try:
        store.put(blocks[0])
        t_put = _timed(lambda: [store.put(b) for b in blocks])
        t_get = _timed(lambda: store.get_many("bench", list(range(n))), repeat)
        results["tiered_host"] = {"put_Bps": _rate(total, t_put), "get_Bps": _rate(total, t_get)}
    finally:
        store.close()

    out = {"block_bytes": len(encoded[0]), "blocks": n, "quick": quick, "results": results}
    _print_table(out)
    return out


def _durable_put_rate(blocks: list[Block], total: int, url: str, spill: Path) -> dict:
    """Durable puts (host RAM + Redis + spill area); `url` may point at no server (outage)."""
    cfg = TieredStoreConfig(
        fingerprint="bench",
        tiers=[HostTierConfig(budget_bytes=total * 2, shm_prefix=_PREFIX),
               RedisTierConfig(url=url, budget_bytes=total * 2, key_prefix="svqbench", socket_timeout_s=1.0)],
        durable=True,
        spill=SpillConfig(path=spill, budget_bytes=total * 2),
    )
    store = TieredStore(cfg)
    try:
        t = _timed(lambda: [store.put(b) for b in blocks])
        spilled = store.stats()["spilled"]
        store.drop_stream("bench")
    finally:
        store.close(timeout=5)
    return {"put_Bps": _rate(total, t), "spilled": spilled}


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"  # closed again: connections are refused


def _print_table(out: dict) -> None:
    print(f"KV block transfer, {out['blocks']} blocks of {out['block_bytes'] / 2**20:.2f} MiB (MB/s)")
    for name, r in out["results"].items():
        cells = ", ".join(
            f"{k.removesuffix('_Bps')}={v / 1e6:,.0f}" if isinstance(v, float) else f"{k}={v}"
            for k, v in r.items()
        )
        print(f"  {name:<12} {cells}")


if __name__ == "__main__":  # pragma: no cover
    import argparse
    import json

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json")
    a = p.parse_args()
    res = run(a.quick)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
