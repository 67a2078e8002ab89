"""URL ingest inside the encoder worker (issue #5: "encoder worker(s): ingest + stages 1-6").

The server validates the URL (scheme, URL policy, optional probe) and sends the resolved source
spec (`enc.ingest`); the encoder runs the same `IngestWorker` as embedded mode with the stream's
session as the sink, so decoded frames never cross a socket. The server polls (`enc.poll`) the
ingest's counters and what the session took since the previous poll (frames, units encoded with
their encode time) and shows them through the API and /metrics as in embedded mode.

After an encoder restart the server re-opens the stream (`resume=True`, continuing after the
last acknowledged block) and starts its ingest again. `resume_point` then decides which frames
are new: a finite source (file, HTTP) is decoded again from its start and frames up to the last
stored block's end time are skipped (so those of an incomplete unit are encoded this time); a
live source (RTSP) continues on its timeline, shifted to start after that time, as the ingest
worker does after a reconnect.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import ValidationError

from streamvqa.engine.errors import EngineError
from streamvqa.proto import ipc
from streamvqa.workers.ingest import Frame, IngestConfig, IngestWorker, SourceKind

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    """What the session took since the last poll (guarded by `StreamIngest.lock`)."""

    frames: int = 0
    last_t: float | None = None
    units: list[tuple[float, int]] = field(default_factory=list)


class ResumePoint:
    """Maps a restarted ingest's frame times onto the stream's timeline (see module doc)."""

    def __init__(self, kind: SourceKind, after: float | None, step: float) -> None:
        self.kind = kind
        self.after = after  # end time of the last stored block (None: nothing stored)
        self.step = step  # one sampling interval
        self.offset: float | None = None if after is not None and kind is SourceKind.RTSP else 0.0

    def map(self, t: float) -> float | None:
        """The frame's stream time, or None to skip it (already stored before the restart)."""
        if self.after is None:
            return t
        if self.kind is not SourceKind.RTSP:
            return t if t > self.after + 1e-6 else None
        if self.offset is None:  # first frame of a live source: continue after the stored blocks
            self.offset = max(0.0, self.after + self.step - t)
        return t + self.offset


class StreamIngest:
    """One stream's ingest in the encoder: the worker, and the deltas the server polls."""

    def __init__(self, config: IngestConfig, push: Callable[[Frame, float], tuple[float, int]],
                 resume_after: float | None, name: str) -> None:
        self.lock = threading.Lock()
        self.pending = _Pending()
        self.point = ResumePoint(config.source.kind, resume_after, 1.0 / config.fps)
        self._push = push
        self.worker = IngestWorker(config, self._sink, name=name)

    def _sink(self, frame: Frame) -> None:
        t = self.point.map(frame.t)
        if t is None:
            return
        seconds, frames = self._push(frame, t)  # raises like embedded mode (counted as sink_error)
        with self.lock:
            p = self.pending
            p.frames += 1
            p.last_t = t
            if frames:
                p.units.append((seconds, frames))

    def drain(self, encoder: ipc.EncoderStats | None) -> ipc.IngestPoll:
        with self.lock:
            p, self.pending = self.pending, _Pending()
        return ipc.IngestPoll(active=True, stats=self.worker.stats().to_dict(), frames=p.frames, last_t=p.last_t,
                              units=p.units, encoder=encoder)


def parse_config(body: ipc.StartIngest) -> IngestConfig:
    """The source spec, validated at the encoder's edge too (a bad one is refused, not run)."""
    try:
        return IngestConfig.model_validate(body.config)
    except ValidationError as e:
        err = e.errors()[0]
        raise EngineError("invalid_request", f"ingest config: {err['msg']}") from None
