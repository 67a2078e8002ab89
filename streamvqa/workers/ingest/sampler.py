"""Stream time, frame sampling by presentation timestamp, and RGB conversion.

Three small pieces every ingest path (PyAV sources and WHIP) shares:

- :class:`Timeline` maps a source's presentation timestamps (which may start anywhere and restart
  after a reconnect) onto one monotonic stream clock starting at 0.
- :class:`FrameSampler` keeps the first frame whose time reaches the next sampling instant
  ``k / fps`` (works for variable frame rate; never bursts after a gap).
- :class:`RgbConverter` turns decoded frames into ``uint8`` RGB arrays at the target size with ONE
  reusable :class:`av.video.reformatter.VideoReformatter` per stream (``to_ndarray(format=...)``
  would build a new swscale context for every frame).
"""

from __future__ import annotations

import math

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from .errors import IngestError

_EPS = 1e-6


class Timeline:
    """Maps per-segment presentation times (seconds) to stream time.

    A *segment* is one continuous connection to the source. The first frame of a segment is
    placed at the segment's ``offset``; later frames keep their pts spacing. Timestamps that go
    backwards inside a segment (looping sources, wrap-around) start a new segment one frame
    step after the last time.
    """

    def __init__(self) -> None:
        self._base_pts: float | None = None
        self._offset = 0.0
        self.last_t: float | None = None
        #: raw presentation time (seconds) of the last frame with a pts, in the source's own clock
        self.last_pts: float | None = None

    @property
    def anchor(self) -> tuple[float, float] | None:
        """``(stream time, source pts)`` the current segment's times count from; None before a pts."""
        return None if self._base_pts is None else (self._offset, self._base_pts)

    def anchor_at(self, pts_s: float) -> None:
        """Place source pts ``pts_s`` at stream time 0 before any frame is mapped (a finite source
        resumed partway: its times stay those of an undisturbed run from its start)."""
        self._base_pts, self._offset = pts_s, 0.0

    def new_segment(self, offset: float | None = None) -> None:
        """Start a segment (after a reconnect); its first frame maps to ``offset`` (default: last time)."""
        self._base_pts = None
        self._offset = offset if offset is not None else (self.last_t or 0.0)

    def map(self, pts_s: float | None, step: float = 1 / 30) -> float:
        """Stream time of a frame whose presentation time is ``pts_s`` seconds.

        A frame without a pts (RTSP's first frames often lack one) is placed ``step`` after the
        previous frame, and the next real pts continues from there.
        """
        if pts_s is None:
            t = self._offset if self.last_t is None else max(self._offset, self.last_t + step)
            self._base_pts, self._offset = None, t + step
            self.last_t = t
            return t
        self.last_pts = pts_s
        if self._base_pts is None:
            self._base_pts = pts_s
        t = self._offset + (pts_s - self._base_pts)
        if self.last_t is not None and t < self.last_t - _EPS:
            self._base_pts, self._offset = pts_s, self.last_t + step
            t = self._offset
        self.last_t = t
        return t


class FrameSampler:
    """Decides which frames to keep at ``fps`` frames per second of stream time.

    The sampling instants are ``0, 1/fps, 2/fps, ...``; a frame is kept when its time reaches the
    next instant not yet served. After a gap the sampler resumes at the frame after the gap
    (one frame, not a burst for every missed instant).
    """

    def __init__(self, fps: float) -> None:
        if fps <= 0:
            raise ValueError("fps must be > 0")
        self.fps = fps
        self._next: float | None = None

    def accept(self, t: float) -> bool:
        if self._next is not None and t + _EPS < self._next:
            return False
        self._next = (math.floor(t * self.fps + _EPS) + 1) / self.fps
        return True


def fit_size(width: int, height: int, max_width: int, max_height: int) -> tuple[int, int]:
    """Largest size within ``max_width x max_height`` with the aspect of ``width x height`` (never upscales)."""
    scale = min(1.0, max_width / width, max_height / height)
    if scale >= 1.0:
        return width, height
    return max(1, min(max_width, round(width * scale))), max(1, min(max_height, round(height * scale)))


class RgbConverter:
    """Converts decoded frames to RGB arrays at most ``max_width x max_height``.

    Raises :class:`IngestError` ``resolution_too_large`` for frames above the hard decode limit.
    """

    def __init__(
        self,
        max_width: int = 1280,
        max_height: int = 720,
        max_decode_width: int = 7680,
        max_decode_height: int = 4320,
    ) -> None:
        self.max_width, self.max_height = max_width, max_height
        self.max_decode_width, self.max_decode_height = max_decode_width, max_decode_height
        self._reformatter = VideoReformatter()

    def check_resolution(self, width: int, height: int) -> None:
        if width > self.max_decode_width or height > self.max_decode_height:
            raise IngestError(
                "resolution_too_large",
                f"source is {width}x{height}, limit is {self.max_decode_width}x{self.max_decode_height}",
            )

    def convert(self, frame: av.VideoFrame) -> np.ndarray:
        self.check_resolution(frame.width, frame.height)
        w, h = fit_size(frame.width, frame.height, self.max_width, self.max_height)
        out = self._reformatter.reformat(frame, width=w, height=h, format="rgb24")
        return out.to_ndarray()
