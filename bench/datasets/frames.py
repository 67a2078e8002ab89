"""Published frame arrays as playable videos: RVS-Movie's ``.npy`` keyframes.

RVS-Movie's "videos" are ``(T, H, W, 3)`` uint8 arrays of MovieNet keyframes, one per second of
the stream (``vstream.KEYFRAME_RATE``). The server plays video files, so :func:`npy_video`
encodes an array once into an H.264 MP4 at that rate (odd sizes padded to even by repeating the
last row/column, which yuv420p needs) and reuses it while it is newer than the array. The file
is written beside a temporary name and renamed, so parallel replays never see half a file.
"""

from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from pathlib import Path

CACHE_DIR = ".npy-mp4"  # under the videos directory (the embedded server's media root)


class FramesError(ValueError):
    """The array is not a ``(T, H, W, 3)`` uint8 frame array."""


def npy_video(array_path: Path, out_dir: Path, rate: float) -> Path:
    """The MP4 of the keyframe array at ``array_path`` (``rate`` frames per second), made if needed."""
    import av
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{array_path.stem}.mp4"
    if out.is_file() and out.stat().st_mtime >= array_path.stat().st_mtime:
        return out
    try:
        frames = np.load(array_path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise FramesError(f"{array_path.name}: not a numpy array file ({e})") from e
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise FramesError(f"{array_path.name}: shape {frames.shape} {frames.dtype}, expected (T, H, W, 3) uint8")
    _, h, w, _ = frames.shape
    fd, tmp = tempfile.mkstemp(suffix=".mp4", dir=out_dir)
    os.close(fd)
    try:
        with av.open(tmp, "w") as container:
            stream = container.add_stream("libx264", rate=Fraction(rate).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = w + w % 2, h + h % 2, "yuv420p"
            for frame in frames:
                rgb = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out
