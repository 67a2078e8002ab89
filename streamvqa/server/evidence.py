"""Evidence ranges as the API reports them: the time the frames stood for, on three clocks.

A block's times are those of its first and last frame, so a one-frame unit would be the empty
range ``[t, t]``. A frame sampled at ``fps`` stands for its sampling slot: from its time up to
the next sampling instant ``(floor(t * fps) + 1) / fps`` (1/fps s on a regular source). Ranges
whose frames sit in consecutive slots merge (no frame was missed between them), a question's
``at`` caps the end, and each range carries the source's presentation time and the wall-clock
time of its ends from the stream's time base (``workers/ingest/timebase.py``).
"""

from __future__ import annotations

import math
from typing import Any

from streamvqa.proto import EvidenceRange
from streamvqa.workers.ingest.timebase import map_time

_EPS = 1e-6


def _slot(t: float, fps: float) -> int:
    return math.floor(t * fps + _EPS)


def evidence_ranges(ranges: list[tuple[float, float]], fps: float | None, time_base: dict[str, Any] | None = None,
                    at: float | None = None) -> list[EvidenceRange]:
    """Block ``(first frame t, last frame t)`` ranges -> :class:`EvidenceRange` s (see module doc)."""
    spans: list[list[float]] = []  # [start, last frame]
    for a, b in sorted((float(a), float(b)) for a, b in ranges):
        if spans and (a <= spans[-1][1] or (fps and _slot(a, fps) <= _slot(spans[-1][1], fps) + 1)):
            spans[-1][1] = max(spans[-1][1], b)
        else:
            spans.append([a, b])
    out = []
    for start, last in spans:
        end = (_slot(last, fps) + 1) / fps if fps else last
        if at is not None:
            end = max(last, min(end, at))
        (src0, wall0), (src1, wall1) = map_time(time_base, start), map_time(time_base, end)
        out.append(EvidenceRange(t_start=start, t_end=end, source_start=src0, source_end=src1,
                                 wall_clock_start=wall0, wall_clock_end=wall1))
    return out
