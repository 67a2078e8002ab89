"""Decoded frame -> stream time -> sample -> RGB -> delivery: the path every ingest source shares."""

from __future__ import annotations

import time

import av

from .delivery import FrameDelivery
from .frames import Frame
from .sampler import FrameSampler, RgbConverter, Timeline
from .stats import IngestCounters


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
        clocked: bool = True,
    ) -> None:
        self.timeline = Timeline()
        self.sampler = FrameSampler(fps)
        self.converter = converter
        self.delivery = delivery
        self.counters = counters
        self._index = 0
        #: assumed spacing of frames that carry no pts (set from the stream's rate when known)
        self.frame_step = 1 / 30
        #: whether frames arrive at their wall-clock time (live or paced): the time base has a wall clock
        self.clocked = clocked
        self._anchor: tuple[float, float] | None = None

    def new_segment(self, offset: float | None = None) -> None:
        """Call after a reconnect: the next frame's time continues from ``offset``."""
        self.timeline.new_segment(offset)

    def _note_segment(self, t: float) -> None:
        """Record where a new pts segment starts (first frame, reconnect, resume) in the time base."""
        anchor = self.timeline.anchor
        if anchor is None or anchor == self._anchor:
            return
        self._anchor = anchor
        offset, base_pts = anchor
        self.counters.time_base.begin(t, base_pts + (t - offset), time.time() if self.clocked else None)

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
