"""`streamvqa bench vllm-export`: what handing one question's memory to vLLM copies, and its time.

    streamvqa bench vllm-export [--tokens 1024,4096] [--shift -64] [--repeats 5] [--json OUT]

The path from the session's answer cache to vLLM's paged cache, per question, for a memory of N
tokens of the model's shape (`--model`, default the default model; random KV: only shapes count):
- `single` (today's): `vllm_engine.export_memory` writes each layer's keys (shifted) and values
  straight into a pooled shared-memory file's mapping (reused from question to question); the
  connector takes views of its mapping. `single-fresh`: the same into a new file each time (a
  pool that keeps none), as the first question of its size does.
- `former` (the baseline, the code before it, kept here only to compare): stack the keys, rotate,
  stack again, stack K and V, write the array to a file (tmp + rename); the connector copied each
  layer out of its memory map and made keys and values contiguous.
Both end with the write into vLLM's blocks, here the same `index_copy_` into a [slots, heads, d]
tensor for both (vLLM's own op is not importable in this environment; it writes the same bytes).

Bytes copied are counted, not estimated: a `TorchDispatchMode` adds up the bytes every torch op
writes (new tensors, and in-place or `out=` writes; views excluded), plus the bytes numpy copies
and the bytes written to files. Times are medians of `--repeats` runs (not under the counter).
Nothing is asserted; figures are printed and written as JSON (docs/vllm.md, "The memory's copy").
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from streamvqa.answering import kvfile
from streamvqa.answering.vllm_engine import export_memory
from streamvqa.evals.common import write_json


@dataclass
class Copies:
    """Bytes written by torch ops, numpy copies and file writes, by stage."""

    torch_bytes: int = 0
    other_bytes: int = 0
    ops: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.torch_bytes + self.other_bytes


# ops that make a tensor without writing its bytes: a file's mapping, uninitialised memory
NO_WRITE = {"from_file", "empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided"}


class CountWrites(TorchDispatchMode):
    """Adds up the bytes each op writes: outputs that alias no input (new tensors) and outputs
    an op writes in place (`copy_`, `addcmul_`, `out=`); views, mappings and empty tensors
    write nothing."""

    def __init__(self, copies: Copies) -> None:
        super().__init__()
        self.copies = copies

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket.__name__ in NO_WRITE:
            return out
        outs = out if isinstance(out, (tuple, list)) else [out]
        for ret, t in zip(func._schema.returns, outs, strict=False):  # noqa: SLF001 - torch's op schema
            alias = ret.alias_info
            if isinstance(t, torch.Tensor) and (alias is None or alias.is_write):
                self.copies.torch_bytes += t.nbytes
                name = func.overloadpacket.__name__
                self.copies.ops[name] = self.copies.ops.get(name, 0) + t.nbytes
        return out


# -- the former path (before the single copy), as it was ------------------------------------
def former_export(adapter, cache, length: int, shift: int, rows: int, directory: str, copies: Copies):
    path = os.path.join(directory, "former.kv")
    keys = torch.stack([layer.keys[0, :, :length] for layer in cache.layers])  # [L, H, n, d]
    values = torch.stack([layer.values[0, :, :length] for layer in cache.layers])
    if shift:
        pos = torch.full((rows, length), shift, dtype=torch.long)
        keys = torch.stack([adapter.rotate(k, pos) for k in keys])
    kv = torch.stack([keys, values], dim=1).cpu().contiguous()  # [L, 2, H, n, d]
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(memoryview(np.ascontiguousarray(kv.numpy())).cast("B"))
    os.replace(tmp, path)
    copies.other_bytes += kv.nbytes  # the file write
    spec = kvfile.KVSpec(path=path, layers=kv.shape[0], heads=kv.shape[2], tokens=length, head_dim=kv.shape[4],
                         dtype=str(kv.dtype).removeprefix("torch."))
    return spec, lambda: os.unlink(path)


def former_layers(spec: kvfile.KVSpec, copies: Copies):
    """What the former connector handed vLLM's op per layer: (keys, values) [t, heads, d]."""
    kv = np.memmap(spec.path, dtype=np.float32, mode="r",  # fp32 (the bench's dtype)
                   shape=(spec.layers, 2, spec.heads, spec.tokens, spec.head_dim))
    for i in range(spec.layers):
        arr = np.array(kv[i])  # a copy out of the map
        copies.other_bytes += arr.nbytes
        part = torch.from_numpy(arr)
        yield part[0].transpose(0, 1).contiguous(), part[1].transpose(0, 1).contiguous()


# -- today's path ---------------------------------------------------------------------------
def single_export(adapter, cache, length: int, shift: int, rows: int, pool: kvfile.Pool, copies: Copies):
    first = cache.layers[0].keys
    spec = kvfile.KVSpec(path="", layers=len(cache.layers), heads=first.shape[1], tokens=length,
                         head_dim=first.shape[-1], dtype=str(first.dtype).removeprefix("torch."))
    buf = pool.acquire(spec.nbytes)
    spec = replace(spec, path=buf.path)
    export_memory(adapter, cache, length, shift, rows, buf.array(spec))
    return spec, lambda: pool.release(buf, reusable=True)  # vLLM answered: the file is reused


def single_layers(spec: kvfile.KVSpec, copies: Copies):
    kv = kvfile.open_memory(spec)
    for i in range(spec.layers):
        yield kv[i, 0], kv[i, 1]


# `single` reuses its pool's file from one question to the next; `single-fresh` (a pool keeping
# no file) writes a new file each time, as the first question of a size does
PATHS = {"former": (former_export, former_layers), "single-fresh": (single_export, single_layers),
         "single": (single_export, single_layers)}


def one_question(path_name: str, adapter, cache, length: int, shift: int, rows: int, target,
                 paged: torch.Tensor, slots: torch.Tensor, count: bool) -> tuple[dict, Copies]:
    """Export, read and write into the paged cache once; seconds per stage (wall, and this
    thread's CPU time: `_cpu`, steadier on a shared machine) and what was copied."""
    export, layers = PATHS[path_name]
    copies = {"export": Copies(), "connector": Copies(), "cache_write": Copies()}
    seconds, cpu = {}, {}
    mode = CountWrites if count else None
    t0, c0 = time.perf_counter(), time.thread_time()
    with mode(copies["export"]) if mode else nullcontext():
        spec, done = export(adapter, cache, length, shift, rows, target, copies["export"])
    seconds["export"], cpu["export"] = time.perf_counter() - t0, time.thread_time() - c0
    read = write = read_cpu = write_cpu = 0.0
    it = layers(spec, copies["connector"])
    for i in range(spec.layers):
        t, c = time.perf_counter(), time.thread_time()
        with mode(copies["connector"]) if mode else nullcontext():
            k, v = next(it)
        read, read_cpu = read + time.perf_counter() - t, read_cpu + time.thread_time() - c
        t, c = time.perf_counter(), time.thread_time()
        with mode(copies["cache_write"]) if mode else nullcontext():
            paged[i, 0].index_copy_(0, slots, k)
            paged[i, 1].index_copy_(0, slots, v)
        write, write_cpu = write + time.perf_counter() - t, write_cpu + time.thread_time() - c
    seconds.update(connector=read, cache_write=write, total=seconds["export"] + read + write)
    cpu.update(connector=read_cpu, cache_write=write_cpu, total=cpu["export"] + read_cpu + write_cpu)
    seconds.update({f"{k}_cpu": v for k, v in cpu.items()})
    del k, v, it
    done()
    return seconds, copies


def random_cache(adapter, tokens: int):
    from streamvqa.engine.window import new_cache

    g = torch.Generator().manual_seed(0)
    shape = (adapter.n_kv_heads, tokens, adapter.head_dim)
    keys = [torch.randn(shape, generator=g, dtype=adapter.dtype) for _ in range(adapter.n_layers)]
    values = [torch.randn(shape, generator=g, dtype=adapter.dtype) for _ in range(adapter.n_layers)]
    return new_cache(adapter, keys, values)


def run(args: argparse.Namespace) -> dict:
    from streamvqa.models.loading import load_adapter

    torch.set_num_threads(args.threads)  # 1 by default: thread CPU time is then all the work
    adapter = load_adapter(args.model)
    rows = adapter.new_positions().rows
    directory = tempfile.mkdtemp(prefix="streamvqa-bench-export-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    rows_out = []
    pools = {"single-fresh": kvfile.Pool(directory, keep=0), "single": kvfile.Pool(directory)}
    try:
        for tokens in args.tokens:
            cache = random_cache(adapter, tokens)
            memory = 2 * adapter.n_layers * adapter.n_kv_heads * tokens * adapter.head_dim * adapter.dtype.itemsize
            paged = torch.empty(adapter.n_layers, 2, tokens, adapter.n_kv_heads, adapter.head_dim, dtype=adapter.dtype)
            slots = torch.randperm(tokens, generator=torch.Generator().manual_seed(1))  # scattered, like blocks
            for shift in sorted({0, args.shift}):
                for name in PATHS:
                    target = directory if name == "former" else pools[name]
                    _, copies = one_question(name, adapter, cache, tokens, shift, rows, target, paged, slots, True)
                    runs = [one_question(name, adapter, cache, tokens, shift, rows, target, paged, slots, False)[0]
                            for _ in range(args.repeats)]
                    sec = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                    row = {"path": name, "tokens": tokens, "shift": shift, "memory_bytes": memory,
                           "seconds": sec,
                           "bytes_copied": {k: c.total for k, c in copies.items()},
                           "bytes_copied_total": sum(c.total for c in copies.values()),
                           "copies_of_memory": sum(c.total for c in copies.values()) / memory,
                           "torch_ops_bytes": {k: c.ops for k, c in copies.items()}}
                    rows_out.append(row)
                    print(f"{name:12s} tokens={tokens:6d} shift={shift:4d}  memory {memory / 2**20:7.1f} MiB  "
                          f"copied {row['bytes_copied_total'] / 2**20:8.1f} MiB ({row['copies_of_memory']:.2f}x: "
                          f"export {row['bytes_copied']['export'] / memory:.2f}, connector "
                          f"{row['bytes_copied']['connector'] / memory:.2f}, cache {row['bytes_copied']['cache_write'] / memory:.2f})"
                          f"  CPU {sec['total_cpu'] * 1e3:7.1f} ms (export {sec['export_cpu'] * 1e3:.1f}, connector "
                          f"{sec['connector_cpu'] * 1e3:.1f}, cache {sec['cache_write_cpu'] * 1e3:.1f}), wall "
                          f"{sec['total'] * 1e3:.1f} ms", flush=True)
            del cache, paged
    finally:
        for pool in pools.values():
            pool.close()
        for f in Path(directory).glob("*"):
            f.unlink()
        os.rmdir(directory)
    ratios = []
    for r in rows_out:
        if r["path"] != "former":
            base = next(b for b in rows_out if b["path"] == "former" and b["tokens"] == r["tokens"]
                        and b["shift"] == r["shift"])
            ratios.append({"path": r["path"], "tokens": r["tokens"], "shift": r["shift"],
                           "bytes_ratio": r["bytes_copied_total"] / base["bytes_copied_total"],
                           "cpu_time_ratio": r["seconds"]["total_cpu"] / base["seconds"]["total_cpu"],
                           "wall_time_ratio": r["seconds"]["total"] / base["seconds"]["total"]})
            print(f"{r['path']}/former tokens={r['tokens']:6d} shift={r['shift']:4d}: bytes copied "
                  f"{ratios[-1]['bytes_ratio']:.2f}x, CPU time {ratios[-1]['cpu_time_ratio']:.2f}x, "
                  f"wall {ratios[-1]['wall_time_ratio']:.2f}x")
    return {"bench": "vllm-export", "model": args.model, "dtype": str(adapter.dtype).removeprefix("torch."),
            "layers": adapter.n_layers, "kv_heads": adapter.n_kv_heads, "head_dim": adapter.head_dim,
            "repeats": args.repeats, "threads": torch.get_num_threads(), "rows": rows_out, "ratios": ratios}


def add_parser(sub) -> None:
    p = sub.add_parser("vllm-export", help="bytes copied and time handing one question's memory to vLLM")
    p.add_argument("--model", default="default")
    p.add_argument("--tokens", type=lambda s: [int(x) for x in s.split(",")], default=[1024, 4096],
                   help="memory lengths (tokens)")
    p.add_argument("--shift", type=int, default=-64, help="the uniform key shift measured beside no shift")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads of this process")
    p.add_argument("--json", dest="export_json", metavar="OUT", help="write the result JSON here")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    write_json(args.export_json, run(args))
    return 0
