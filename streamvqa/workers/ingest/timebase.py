"""How a stream's time maps to its source's own timestamps and to the wall clock.

Stream time ``t`` starts at 0 on the first decoded frame and stays monotonic across reconnects
and resumes (see :class:`~.sampler.Timeline`), so it is a different clock from the source's
presentation timestamps (PTS) and from the wall clock. A *segment* records, for the first frame
of one continuous piece of the stream (the first connection, each reconnect, a resume after an
encoder restart), its stream time, its source PTS and the unix time it was decoded; inside a
segment both clocks advance with ``t``. ``map_time`` turns a stream time into both.

``wall_clock`` is None for sources not tied to the wall clock (a file or HTTP resource decoded
as fast as possible); ``source_pts`` is None for sources whose frames carry no PTS.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any

#: Segments kept per stream: the first and the most recent (a flapping source must not grow it).
MAX_SEGMENTS = 64
_SOURCE_TOLERANCE_S = 0.01  # a "new" segment this close to the last one's mapping continues it
_WALL_TOLERANCE_S = 0.5


@dataclass(frozen=True)
class TimeSegment:
    t: float
    source_pts: float | None
    wall_clock: float | None

    def source_at(self, t: float) -> float | None:
        return None if self.source_pts is None else self.source_pts + (t - self.t)

    def wall_at(self, t: float) -> float | None:
        return None if self.wall_clock is None else self.wall_clock + (t - self.t)


def _continues(prev: TimeSegment, seg: TimeSegment) -> bool:
    src, wall = prev.source_at(seg.t), prev.wall_at(seg.t)
    same_src = (src is None) == (seg.source_pts is None) and (
        src is None or abs(src - seg.source_pts) <= _SOURCE_TOLERANCE_S)  # type: ignore[operator]
    same_wall = (wall is None) == (seg.wall_clock is None) and (
        wall is None or abs(wall - seg.wall_clock) <= _WALL_TOLERANCE_S)  # type: ignore[operator]
    return same_src and same_wall


def _bounded(segments: list[TimeSegment]) -> list[TimeSegment]:
    return segments if len(segments) <= MAX_SEGMENTS else [segments[0], *segments[-(MAX_SEGMENTS - 1):]]


class TimeBase:
    """The segments of one ingest (thread-safe: the decode thread writes, the API reads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._segments: list[TimeSegment] = []

    def begin(self, t: float, source_pts: float | None, wall_clock: float | None) -> None:
        """A new segment starts with the frame at stream time ``t`` (ignored if it continues the last)."""
        seg = TimeSegment(float(t), source_pts, wall_clock)
        with self._lock:
            if self._segments and _continues(self._segments[-1], seg):
                return
            self._segments = _bounded([*self._segments, seg])

    def refine_wall(self, t: float, wall_clock: float) -> None:
        """The frame at ``t`` (last segment) was decoded at ``wall_clock``: if that puts the
        segment's start earlier than recorded, keep the earlier (a live frame is never early)."""
        with self._lock:
            last = self._segments[-1] if self._segments else None
            if last is None or last.wall_clock is None:
                return
            start = wall_clock - (t - last.t)
            if start < last.wall_clock:
                self._segments[-1] = TimeSegment(last.t, last.source_pts, start)

    def to_dict(self) -> dict[str, Any] | None:
        with self._lock:
            return to_dict(self._segments)


def to_dict(segments: list[TimeSegment]) -> dict[str, Any] | None:
    """``{source_pts_at_zero, wall_clock_at_zero, segments: [{t, source_pts, wall_clock}]}``; None if empty."""
    if not segments:
        return None
    first = segments[0]
    return {"source_pts_at_zero": first.source_at(0.0), "wall_clock_at_zero": first.wall_at(0.0),
            "segments": [asdict(s) for s in segments]}


def segments_of(time_base: dict[str, Any] | None) -> list[TimeSegment]:
    if not time_base:
        return []
    return [TimeSegment(float(s["t"]), s.get("source_pts"), s.get("wall_clock")) for s in time_base["segments"]]


def shifted(time_base: dict[str, Any] | None, offset: float) -> dict[str, Any] | None:
    """The same mapping for a stream whose times were all moved by ``offset`` seconds."""
    if not offset:
        return time_base
    return to_dict([TimeSegment(s.t + offset, s.source_pts, s.wall_clock) for s in segments_of(time_base)])


def joined(earlier: dict[str, Any] | None, later: dict[str, Any] | None) -> dict[str, Any] | None:
    """Segments of an ingest that died followed by those of the one that resumed the stream."""
    segs = segments_of(earlier)
    for seg in segments_of(later):
        if not segs or not _continues(segs[-1], seg):
            segs.append(seg)
    return to_dict(_bounded(segs))


def map_time(time_base: dict[str, Any] | None, t: float) -> tuple[float | None, float | None]:
    """``(source_pts, wall_clock)`` of stream time ``t``: through the last segment that started at
    or before ``t`` (the first one for earlier times); ``(None, None)`` without a time base."""
    segs = segments_of(time_base)
    if not segs:
        return None, None
    seg = segs[0]
    for s in segs:
        if s.t <= t + 1e-9:
            seg = s
        else:
            break
    return seg.source_at(t), seg.wall_at(t)
