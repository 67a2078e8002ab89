"""`streamvqa bench soak --in-process`: the engine's memory per encoded frame, without HTTP or decoding.

    streamvqa bench soak --in-process [--frames 2000] [--n-local 600] [--methods rekv,sliding-window]
        [--ask-every-frames 10] [--sample-every 50] [--model default] [--json OUT]

Runs the embedded engine in this process (the CLI's allocator set-up and the embedded server's
default store: a bounded shared-memory host tier spilling to disk), one stream per method with a
small hot window (`n_local` tokens, so the window is full within the first minute instead of
after ~21), pushes synthetic 720p frames (`streamvqa.synth`) as fast as the CPU encodes them,
asks every stream a question every `--ask-every-frames` frames, and every `--sample-every`
frames records RSS, the `[heap]`/arenas (`/proc/self/smaps`), glibc's own heap accounting
(`mallinfo2`: bytes in use vs free inside the heap and arenas, bytes in mmapped chunks) and the
engine's KV accounting per tier. A frame count, not time, is the clock: the figures are bytes per
encoded frame after the window is full, which is what separates a leak (keeps growing) from a
high-water mark (flat once every window-sized buffer has been allocated once).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import os
import time
from typing import Any

import numpy as np

from bench.soak import OUT_OF_PROCESS, QUESTIONS, process_memory


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def mallinfo2() -> dict[str, int] | None:
    """glibc's heap accounting over all arenas (None off glibc or before 2.33)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    m = fn()
    # arena: bytes obtained with sbrk/arena mmaps; uordblks: in use there; fordblks: free there;
    # hblkhd: bytes in chunks mmapped on their own (above the mmap threshold: returned when freed)
    return {"malloc_arena": m.arena, "malloc_in_use": m.uordblks, "malloc_free": m.fordblks,
            "malloc_mmapped": m.hblkhd, "malloc_mmapped_chunks": m.hblks}


def frames_720p(n: int = 16, seed: int = 7) -> list[np.ndarray]:
    """A few distinct synthetic 1280x720 frames (drifting background, events), cycled by the run."""
    from streamvqa.synth.streams import random_stream, render_stream_frame

    stream = random_stream(seed, minutes=max(1.0, n / 60.0), width=1280, height=720)
    return [render_stream_frame(stream, i) for i in range(n)]


def engine_config(model: str) -> Any:
    """The embedded server's engine: its default store (bounded host tier, scratch disk spill)."""
    from streamvqa.engine import EngineConfig
    from streamvqa.server.settings import ServerSettings

    return EngineConfig(model=model, store=ServerSettings(topology="embedded").store_config())


def run(args: argparse.Namespace) -> dict[str, Any]:
    from streamvqa.engine import Engine

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    frames = frames_720p()
    engine = Engine(engine_config(args.model))
    samples: list[dict[str, Any]] = []
    answers = 0
    try:
        gc.collect()
        loaded = process_memory(os.getpid())
        sessions = [engine.open_stream(f"soak-{m}", m, {"n_local": args.n_local}) for m in methods]
        t0 = time.monotonic()
        for k in range(1, args.frames + 1):
            image = frames[k % len(frames)]
            for s in sessions:
                s.push_frame(image, k / args.fps)
            if args.ask_every_frames and k % args.ask_every_frames == 0:
                for s in sessions:
                    s.answer(QUESTIONS[(k // args.ask_every_frames) % len(QUESTIONS)], max_tokens=args.max_tokens)
                    answers += 1
            if k % args.sample_every == 0 or k == args.frames:
                samples.append(sample(sessions, k, answers, time.monotonic() - t0))
                print(line(samples[-1]), flush=True)
        for s in list(engine.sessions):
            engine.close_stream(s)
        sessions.clear()  # the closed sessions' windows and answer caches go with them
        gc.collect()
        after_close = process_memory(os.getpid())
    finally:
        engine.close()
    return summarize(args, methods, loaded, samples, after_close)


def sample(sessions: list, frames: int, answers: int, elapsed: float) -> dict[str, Any]:
    kv: dict[str, int] = {}
    window_tokens = []
    for s in sessions:
        st = s.stats()
        window_tokens.append(st.window_tokens)
        for tier, n in st.kv_bytes.items():
            kv[tier] = kv.get(tier, 0) + int(n)
    # the store's index: rep_keys of every stored block (not KV, grows with the stream by design)
    index = sum(s.block_index().rep_keys.nbytes for s in sessions if s.stores_blocks)
    mem = process_memory(os.getpid())
    in_process = sum(n for tier, n in kv.items() if tier not in OUT_OF_PROCESS)
    return {"frames": frames, "t": round(elapsed, 1), **mem, **(mallinfo2() or {}), "kv_bytes": kv,
            "kv_in_process_bytes": in_process, "rss_minus_kv": mem["VmRSS"] - in_process, "index_bytes": index,
            # the answer caches kept for follow-ups: KV since they are counted (tier "answer"); before,
            # they were part of RSS minus KV
            "answer_bytes": kv.get("answer", 0),
            "window_tokens": window_tokens, "answers": answers}


def line(s: dict[str, Any]) -> str:
    mib = 2**20
    return (f"soak frames={s['frames']:5d} t={s['t']:6.0f}s rss={s['VmRSS'] / mib:7.1f} MiB "
            f"kv={s['kv_in_process_bytes'] / mib:6.1f} (answer {s['kv_bytes'].get('answer', 0) / mib:5.1f}) "
            f"rss-kv={s['rss_minus_kv'] / mib:7.1f} index={s['index_bytes'] / mib:5.1f} "
            f"heap={s['heap_rss'] / mib:5.1f} malloc in use/free={s.get('malloc_in_use', 0) / mib:5.1f}/"
            f"{s.get('malloc_free', 0) / mib:5.1f} mmapped={s.get('malloc_mmapped', 0) / mib:6.1f} "
            f"window={s['window_tokens']} answers={s['answers']}")


def fit(samples: list[dict[str, Any]], key: str) -> float | None:
    """Least-squares bytes per frame of `key` over the samples."""
    from bench.soak import slope_per_hour

    slope = slope_per_hour([float(s["frames"]) for s in samples], [float(s[key]) for s in samples])
    return None if slope is None else slope / 3600.0


def summarize(args: argparse.Namespace, methods: list[str], loaded: dict, samples: list[dict[str, Any]],
              after_close: dict) -> dict[str, Any]:
    # the window is full once its token count stops rising; growth is fitted after that (and after
    # --warmup of the run), and separately over the last half (does it slow down or keep going?)
    full_at = next((s["frames"] for s in samples if s["window_tokens"] == samples[-1]["window_tokens"]), None)
    start = max(full_at or 0, int(args.warmup * args.frames))
    steady = [s for s in samples if s["frames"] >= start]
    late = [s for s in samples if s["frames"] >= args.frames // 2]
    keys = ("rss_minus_kv", "VmRSS", "kv_in_process_bytes", "answer_bytes", "index_bytes", "heap_rss", "RssAnon", "malloc_in_use", "malloc_free",
            "malloc_mmapped")
    growth = {f"{k}_bytes_per_frame": fit(steady, k) for k in keys if samples and k in samples[0]}
    growth_late = {f"{k}_bytes_per_frame": fit(late, k) for k in keys if samples and k in samples[0]}
    return {
        "config": {"in_process": True, "methods": methods, "frames": args.frames, "n_local": args.n_local,
                   "ask_every_frames": args.ask_every_frames, "max_tokens": args.max_tokens, "model": args.model,
                   "frame_size": [1280, 720], "warmup": args.warmup},
        "loaded": loaded, "window_full_at_frame": full_at, "fit_from_frame": start,
        "first_steady": steady[0] if steady else None, "last": samples[-1] if samples else None,
        "after_close": after_close, "growth": growth, "growth_last_half": growth_late, "samples": samples,
    }


def report(result: dict[str, Any]) -> str:
    c, g, gl = result["config"], result["growth"], result["growth_last_half"]
    first, last = result["first_steady"] or {}, result["last"] or {}

    def mib(v: float | None) -> str:
        return "—" if v is None else f"{v / 2**20:.1f}"

    def kib(v: float | None) -> str:
        return "—" if v is None else f"{v / 2**10:.1f}"

    return "\n".join([
        f"soak (in process): {', '.join(c['methods'])}, n_local {c['n_local']}, {last.get('frames')} frames, "
        f"{last.get('answers')} answers; window full at frame {result['window_full_at_frame']}, fit from frame "
        f"{result['fit_from_frame']}",
        f"RSS-KV at frame {first.get('frames')}: {mib(first.get('rss_minus_kv'))} MiB, at the end "
        f"{mib(last.get('rss_minus_kv'))} MiB; malloc in use {mib(first.get('malloc_in_use'))} -> "
        f"{mib(last.get('malloc_in_use'))} MiB, free in heap/arenas {mib(first.get('malloc_free'))} -> "
        f"{mib(last.get('malloc_free'))} MiB; after closing every stream RSS {mib(result['after_close']['VmRSS'])} MiB",
        "per frame after the fill (KiB): " + ", ".join(f"{k.removesuffix('_bytes_per_frame')} {kib(v)}"
                                                       for k, v in g.items()),
        "per frame, last half (KiB): " + ", ".join(f"{k.removesuffix('_bytes_per_frame')} {kib(v)}"
                                                   for k, v in gl.items()),
    ])
