"""Deterministic test media written with PyAV: each frame shows its own index as 8 bars (bits)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

WIDTH, HEIGHT = 320, 240
BITS = 8
BAR = WIDTH // BITS


def index_image(i: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """RGB frame encoding ``i`` (0..255): bar k (left to right) is white when bit k is set."""
    img = np.zeros((height, width, 3), np.uint8)
    bar = width // BITS
    for k in range(BITS):
        if (i >> k) & 1:
            img[:, k * bar : (k + 1) * bar] = 255
    img[:, BITS * bar :] = 128
    return img


def read_index(image: np.ndarray) -> int:
    """Inverse of :func:`index_image`, robust to compression and (uniform) downscaling."""
    h, w = image.shape[:2]
    bar = w / BITS
    gray = image.mean(axis=2)
    value = 0
    for k in range(BITS):
        x0, x1 = int(k * bar + bar * 0.25), int(k * bar + bar * 0.75)
        if gray[h // 4 : 3 * h // 4, x0:x1].mean() > 128:
            value |= 1 << k
    return value


def write_index_mp4(
    path: Path,
    seconds: float = 10.0,
    fps: int = 25,
    width: int = WIDTH,
    height: int = HEIGHT,
    faststart: bool = True,
) -> Path:
    """H.264 MP4 (constant ``fps``, keyframe every second) whose frame ``i`` shows ``i % 256``."""
    n = round(seconds * fps)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.options = {"preset": "ultrafast", "crf": "18", "g": str(fps), "bf": "0"}
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(index_image(i % 256, width, height), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def write_audio_only(path: Path, seconds: float = 1.0) -> Path:
    """An AAC-in-MP4 file with no video stream."""
    rate = 16000
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=rate)
        for i in range(int(seconds * rate / 1024)):
            t = (np.arange(1024) + i * 1024) / rate
            samples = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, i * 1024
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def write_index_ts_vfr(path: Path, times_s: list[float], start_s: float = 100.0) -> Path:
    """MPEG-TS H.264 with frames at ``start_s + times_s[i]`` (variable frame rate, pts far from 0).

    Frame i shows index i. TS keeps absolute timestamps, unlike MP4 edit lists.
    """
    tb = Fraction(1, 90000)
    with av.open(str(path), "w", format="mpegts") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.time_base = tb
        stream.codec_context.time_base = tb
        stream.options = {"preset": "ultrafast", "crf": "18", "g": "25", "bf": "0"}
        for i, t in enumerate(times_s):
            frame = av.VideoFrame.from_ndarray(index_image(i % 256), format="rgb24")
            frame.pts = round((start_s + t) * 90000)
            frame.time_base = tb
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path
