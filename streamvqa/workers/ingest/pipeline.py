"""Decoded frame -> stream time -> sample -> RGB -> delivery: the path every ingest source shares."""

from __future__ import annotations

import time
from typing import Literal

import av

from .delivery import FrameDelivery
from .frames import Frame
from .sampler import FrameSampler, RgbConverter, Timeline
from .stats import IngestCounters

#: how long into a live segment later frames may still move its wall-clock start earlier
#: (covers RTSP's probe: ``analyzeduration`` 1 s; later, source/host clock drift would count)
_REFINE_S = 3.0


class FramePipeline:
    """Turns decoded :class:`av.VideoFrame` objects into sampled RGB :class:`Frame` s for the sink.

    Used by the PyAV worker (RTSP/HTTP/files) and by WHIP sessions, so sampling, conversion,
    counting and backpressure behave the same whatever the source.
    """

    def __init__(
        self,
        fps: float,
        converter: RgbConverter,
        delivery: FrameDelivery,
        counters: IngestCounters,
        clock: Literal["live", "paced"] | None = "live",
    ) -> None:
        self.timeline = Timeline()
        self.sampler = FrameSampler(fps)
        self.converter = converter
        self.delivery = delivery
        self.counters = counters
        self._index = 0
        #: assumed spacing of frames that carry no pts (set from the stream's rate when known)
        self.frame_step = 1 / 30
        #: how frames relate to the wall clock: "live" (they arrive at their time, or late),
        #: "paced" (delivered at their time), None (decoded as fast as possible: no wall clock)
        self.clock = clock
        self._anchor: tuple[float, float] | None = None
        self._segment_t = 0.0

    def new_segment(self, offset: float | None = None) -> None:
        """Call after a reconnect: the next frame's time continues from ``offset``."""
        self.timeline.new_segment(offset)

    def reopened(self) -> None:
        """The source was reopened on the same timeline (an HTTP resume): the next frame starts a
        time-base segment, as pacing (so the wall clock) restarts there (dropped if it continues)."""
        self._anchor = None

    def _note_segment(self, t: float) -> None:
        """Record where a new pts segment starts (first frame, reconnect, resume) in the time base."""
        anchor = self.timeline.anchor
        now = time.time()
        if anchor is None or anchor == self._anchor:
            if self.clock == "live" and anchor is not None and t - self._segment_t <= _REFINE_S:
                # a live frame is never decoded before it arrives, often after (the frames read
                # while FFmpeg probes the stream are decoded at once after it): keep the earliest
                self.counters.time_base.refine_wall(t, now)
            return
        self._anchor, self._segment_t = anchor, t
        offset, base_pts = anchor
        self.counters.time_base.begin(t, base_pts + (t - offset), now if self.clock else None)

    def push(self, frame: av.VideoFrame, pts_s: float | None = None) -> Frame | None:
        """Account for one decoded frame; return the sampled :class:`Frame` if it was kept.

        ``pts_s`` overrides the frame's own presentation time (seconds).
        """
        if pts_s is None:
            pts_s = frame.time
        self.converter.check_resolution(frame.width, frame.height)
        t = self.timeline.map(None if pts_s is None else float(pts_s), self.frame_step)
        self._note_segment(t)
        self.counters.decoded(t, frame.width, frame.height)
        if not self.sampler.accept(t):
            return None
        out = Frame(t=t, image=self.converter.convert(frame), index=self._index)
        self._index += 1
        self.counters.sampled(t)
        self.delivery.submit(out)
        return out
