"""URL ingest inside the encoder worker (issue #5: "encoder worker(s): ingest + stages 1-6").

The server validates the URL (scheme, URL policy, optional probe) and sends the resolved source
spec (`enc.ingest`); the encoder runs the same `IngestWorker` as embedded mode with the stream's
session as the sink, so decoded frames never cross a socket. The server polls (`enc.poll`) the
ingest's counters and what the session took since the previous poll (frames, units encoded with
their encode time) and shows them through the API and /metrics as in embedded mode.

After an encoder restart the server re-opens the stream (`resume=True`, continuing after the
last acknowledged block) and starts its ingest again with `resume_after` = that block's end time
(`IngestWorker`'s resume): a finite source (file, HTTP with a duration) is seeked there and
frames up to it are skipped without real-time pacing, so a paced file does not replay what it
had played (those of an incomplete unit are encoded again); a live source (RTSP) continues on
its timeline one sampling interval after that time. The ingest shows `recovering` until its
first new frame.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import ValidationError

from streamvqa.engine.errors import EngineError
from streamvqa.proto import ipc
from streamvqa.workers.ingest import Frame, IngestConfig, IngestWorker

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    """What the session took since the last poll (guarded by `StreamIngest.lock`)."""

    frames: int = 0
    last_t: float | None = None
    units: list[tuple[float, int]] = field(default_factory=list)


class StreamIngest:
    """One stream's ingest in the encoder: the worker, and the deltas the server polls."""

    def __init__(self, config: IngestConfig, push: Callable[[Frame, float], tuple[float, int]],
                 resume_after: float | None, name: str) -> None:
        self.lock = threading.Lock()
        self.pending = _Pending()
        self._push = push
        self.worker = IngestWorker(config, self._sink, name=name, resume_after=resume_after)

    def _sink(self, frame: Frame) -> None:
        seconds, frames = self._push(frame, frame.t)  # raises like embedded mode (counted as sink_error)
        with self.lock:
            p = self.pending
            p.frames += 1
            p.last_t = frame.t
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
