"""Encoding: frames per second per stream, split into vision, prefill and the rest (retention,
block capture, store write), per preset and model; multi-stream throughput on one engine."""

from __future__ import annotations

import time

from bench.common import Probe, engine, frames, presets
from bench.config import BenchConfig


def encode_rate(model: str, method: str, n_frames: int, fps: float, seed: int = 11) -> dict:
    """Push `n_frames` into one fresh session; rates in frames/s and the split of the seconds."""
    eng = engine(model)
    probe = Probe(eng.adapter)
    sid = f"bench-enc-{method}"
    data = list(frames(seed, n_frames, fps))
    session = eng.open_stream(sid, method=method)
    try:
        with probe.active():
            probe.reset()
            t0 = time.perf_counter()
            for img, t in data:
                session.push_frame(img, t)
            session.flush()  # segmenting presets hold an open unit: its encoding counts too
            wall = time.perf_counter() - t0
        st = session.stats()
    finally:
        eng.close_stream(sid)
    encode_s = st.encode_seconds_total
    other = max(0.0, encode_s - probe.vision_s - probe.prefill_s)
    return {
        # frames the stream can deliver per second (merged/segmented frames count: they were handled)
        "model": model, "method": method, "frames": st.frames_received, "frames_encoded": st.frames_encoded,
        "frames_per_s": st.frames_received / wall if wall else None,
        "vision_s_per_frame": probe.vision_s / n_frames,
        "prefill_s_per_frame": probe.prefill_s / n_frames,
        "retention_s_per_frame": other / n_frames,  # capture + store write + window retention
        "encode_s_per_frame": encode_s / n_frames,
    }


def multi_stream(model: str, method: str, n_sessions: int, n_frames: int, fps: float) -> dict:
    """`n_sessions` sessions on one engine fed round-robin, frame by frame; aggregate frames/s."""
    eng = engine(model)
    sids = [f"bench-multi-{n_sessions}-{k}" for k in range(n_sessions)]
    data = [list(frames(100 + k, n_frames, fps)) for k in range(n_sessions)]
    sessions = [eng.open_stream(s, method=method) for s in sids]
    try:
        t0 = time.perf_counter()
        for i in range(n_frames):
            for s, d in zip(sessions, data, strict=True):
                s.push_frame(*d[i])
        wall = time.perf_counter() - t0
    finally:
        for s in sids:
            eng.close_stream(s)
    total = n_sessions * n_frames
    return {"model": model, "method": method, "sessions": n_sessions, "frames": total,
            "frames_per_s": total / wall, "frames_per_s_per_stream": total / wall / n_sessions}


def run(cfg: BenchConfig) -> dict:
    per_preset = []
    for model, n in ((cfg.model, cfg.encode_frames), (cfg.tiny_model, cfg.tiny_encode_frames)):
        for method in presets(cfg.presets):
            encode_rate(model, method, 1, cfg.fps)  # warm-up (first-call allocations)
            per_preset.append(encode_rate(model, method, n, cfg.fps))
    method = "rekv" if "rekv" in presets(cfg.presets) else presets(cfg.presets)[0]
    multi = [multi_stream(cfg.tiny_model, method, k, cfg.multi_frames, cfg.fps) for k in cfg.multi_streams]
    base = multi[0]["frames_per_s"] if multi else None
    for m in multi:
        m["speedup_vs_1"] = m["frames_per_s"] / base if base else None
    return {"per_preset": per_preset, "multi_stream": multi}
