"""Small JPEGs of the frames streams deliver, within one server-wide byte budget.

The console shows each stream's latest frame and an answer's evidence as pictures; the engine
keeps no pixels, so the server keeps a thumbnail of every delivered frame (downscaled to
``max_side`` pixels, JPEG) and evicts to stay within ``budget_bytes``:

* from the stream holding the most bytes;
* a frame no answer cited before one that was (``cite`` marks evidence);
* among those, the frame whose removal leaves the smallest gap in stream time (uniform
  thinning: old parts of a long stream keep a coarser but complete coverage, so a question about
  any moment still finds a picture near it);
* never a stream's latest frame while it has others.

Encoding costs milliseconds per frame, so a stream gets at most one picture per
``min_interval_s`` of stream time (5 a second: a 30 fps source pays for one frame in six), and a
large frame is subsampled by striding before the smooth resize.

Frames arrive on ingest threads and are read on the event loop: one lock guards everything.
"""

from __future__ import annotations

import bisect
import io
import threading
from dataclasses import dataclass, field

import numpy as np
from PIL import Image


def encode_jpeg(image: np.ndarray, max_side: int, quality: int) -> bytes:
    """``H x W x 3`` uint8 RGB -> a JPEG whose longer side is at most ``max_side``."""
    step = max(1, max(image.shape[0], image.shape[1]) // (2 * max_side))  # cheap first cut, then smooth
    pic = Image.fromarray(np.ascontiguousarray(image[::step, ::step, :3]), "RGB")
    pic.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    pic.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@dataclass
class Thumb:
    t: float
    jpeg: bytes
    cited: bool = False


@dataclass
class _Stream:
    times: list[float] = field(default_factory=list)  # sorted stream times
    thumbs: list[Thumb] = field(default_factory=list)  # parallel to times
    nbytes: int = 0


class ThumbnailStore:
    """Thumbnails per stream id; ``budget_bytes`` bounds the sum of all JPEG bytes (0: keep none)."""

    def __init__(self, budget_bytes: int, max_side: int = 160, quality: int = 70,
                 min_interval_s: float = 0.2) -> None:
        self.budget_bytes = budget_bytes
        self.max_side = max_side
        self.quality = quality
        self.min_interval_s = min_interval_s
        self._streams: dict[str, _Stream] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.budget_bytes > 0

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def add(self, stream_id: str, t: float, image: np.ndarray) -> None:
        """Keep a thumbnail of ``image`` at stream time ``t`` (encoding runs outside the lock)."""
        if not self.enabled:
            return
        with self._lock:
            s = self._streams.get(stream_id)
            if s is not None and s.times and 0 <= t - s.times[-1] < self.min_interval_s - 1e-9:
                return  # one picture per min_interval_s is enough
        self.add_jpeg(stream_id, t, encode_jpeg(image, self.max_side, self.quality))

    def add_jpeg(self, stream_id: str, t: float, jpeg: bytes) -> None:
        if not self.enabled or len(jpeg) > self.budget_bytes:
            return
        with self._lock:
            s = self._streams.setdefault(stream_id, _Stream())
            i = bisect.bisect_left(s.times, t)
            if i < len(s.times) and s.times[i] == t:  # same time again: the newer picture wins
                s.nbytes -= len(s.thumbs[i].jpeg)
                self._bytes -= len(s.thumbs[i].jpeg)
                s.thumbs[i] = Thumb(t, jpeg, s.thumbs[i].cited)
            else:
                s.times.insert(i, t)
                s.thumbs.insert(i, Thumb(t, jpeg))
            s.nbytes += len(jpeg)
            self._bytes += len(jpeg)
            while self._bytes > self.budget_bytes and self._evict_one():
                pass

    def _evict_one(self) -> bool:
        """Drop one thumbnail (see the module doc); False when nothing is left."""
        many = [(s.nbytes, sid) for sid, s in self._streams.items() if len(s.thumbs) > 1]
        if many:
            sid = max(many)[1]
        elif self._streams:  # only latest pictures left: the largest goes
            sid = max((s.nbytes, sid) for sid, s in self._streams.items())[1]
        else:
            return False
        s = self._streams[sid]
        i = self._victim(s)
        gone = s.thumbs.pop(i)
        s.times.pop(i)
        s.nbytes -= len(gone.jpeg)
        self._bytes -= len(gone.jpeg)
        if not s.thumbs:
            del self._streams[sid]
        return True

    @staticmethod
    def _victim(s: _Stream) -> int:
        """Uncited before cited, then the smallest gap left behind; the first and the latest of
        three or more stay (the covered span keeps its ends)."""
        n = len(s.thumbs)
        if n <= 2:
            return 0
        return min(range(1, n - 1), key=lambda i: (s.thumbs[i].cited, s.times[i + 1] - s.times[i - 1], i))

    def cite(self, stream_id: str, times: list[float]) -> None:
        """Mark the thumbnail nearest each time as evidence (evicted after uncited ones)."""
        with self._lock:
            s = self._streams.get(stream_id)
            if s is None:
                return
            for t in times:
                i = self._nearest(s, t)
                if i is not None:
                    s.thumbs[i].cited = True

    @staticmethod
    def _nearest(s: _Stream, t: float) -> int | None:
        if not s.times:
            return None
        i = bisect.bisect_left(s.times, t)
        near = [j for j in (i - 1, i) if 0 <= j < len(s.times)]
        return min(near, key=lambda j: (abs(s.times[j] - t), j))

    def latest(self, stream_id: str) -> Thumb | None:
        with self._lock:
            s = self._streams.get(stream_id)
            return s.thumbs[-1] if s and s.thumbs else None

    def nearest(self, stream_id: str, t: float) -> Thumb | None:
        """The kept thumbnail closest in stream time to ``t`` (the earlier one on a tie)."""
        with self._lock:
            s = self._streams.get(stream_id)
            i = self._nearest(s, t) if s else None
            return None if i is None else s.thumbs[i]

    def index(self, stream_id: str) -> list[dict[str, float | int | bool]]:
        with self._lock:
            s = self._streams.get(stream_id)
            return [{"t": th.t, "bytes": len(th.jpeg), "cited": th.cited} for th in (s.thumbs if s else [])]

    def drop(self, stream_id: str) -> None:
        """Forget a stream's thumbnails (the stream was deleted)."""
        with self._lock:
            s = self._streams.pop(stream_id, None)
            if s is not None:
                self._bytes -= s.nbytes
