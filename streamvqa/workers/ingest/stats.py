"""Ingest state machine values and thread-safe counters, shared by every ingest path."""

from __future__ import annotations

import enum
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import IngestError
from .timebase import TimeBase


class IngestState(enum.StrEnum):
    """Lifecycle of one ingest.

    ``connecting -> running -> reconnecting -> running ... -> ended | failed | stopped``.
    ``recovering``: the stream's encoder restarted and ingest is getting back to the last
    acknowledged position (until the first new frame is decoded; multi-process topology).
    ``ended``: the source finished cleanly (end of file). ``failed``: see ``last_error``.
    ``stopped``: :meth:`stop` / ``close()`` was called.
    """

    CONNECTING = "connecting"
    RUNNING = "running"
    RECONNECTING = "reconnecting"
    RECOVERING = "recovering"
    ENDED = "ended"
    FAILED = "failed"
    STOPPED = "stopped"

    @property
    def is_final(self) -> bool:
        return self in (IngestState.ENDED, IngestState.FAILED, IngestState.STOPPED)


DROP_ENCODER_BEHIND = "encoder_behind"  # queue full: the oldest queued frame was dropped
DROP_SINK_ERROR = "sink_error"  # the sink raised on this frame


@dataclass(frozen=True)
class IngestStats:
    """A consistent snapshot of one ingest's counters (what the API and metrics show)."""

    state: str
    frames_decoded: int
    frames_sampled: int
    frames_delivered: int
    frames_dropped: dict[str, int] = field(default_factory=dict)
    decode_errors: int = 0
    reconnects: int = 0
    encode_lag_s: float = 0.0
    last_decoded_t: float | None = None
    last_delivered_t: float | None = None
    width: int | None = None
    height: int | None = None
    last_error: dict[str, str] | None = None
    #: how stream time maps to source pts and wall clock (:mod:`.timebase`); None before a frame
    time_base: dict[str, Any] | None = None

    @property
    def frames_dropped_total(self) -> int:
        return sum(self.frames_dropped.values())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["frames_dropped"] = dict(self.frames_dropped)
        return d


class IngestCounters:
    """Mutable, lock-protected counters; writers are the decode and delivery threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.state = IngestState.CONNECTING
        self.frames_decoded = 0
        self.frames_sampled = 0
        self.frames_delivered = 0
        self.frames_dropped: dict[str, int] = {}
        self.decode_errors = 0
        self.reconnects = 0
        self.last_decoded_t: float | None = None
        self.last_sampled_t: float | None = None
        self.last_delivered_t: float | None = None
        self.width: int | None = None
        self.height: int | None = None
        self.last_error: IngestError | None = None
        self.time_base = TimeBase()

    def set_state(self, state: IngestState, error: IngestError | None = None) -> None:
        with self._lock:
            if self.state.is_final:  # final states are sticky
                return
            self.state = state
            if error is not None:
                self.last_error = error

    def decoded(self, t: float, width: int, height: int) -> None:
        with self._lock:
            self.frames_decoded += 1
            self.last_decoded_t = t
            self.width, self.height = width, height

    def sampled(self, t: float) -> None:
        with self._lock:
            self.frames_sampled += 1
            self.last_sampled_t = t

    def delivered(self, t: float) -> None:
        with self._lock:
            self.frames_delivered += 1
            self.last_delivered_t = t

    def dropped(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.frames_dropped[reason] = self.frames_dropped.get(reason, 0) + n

    def decode_error(self) -> None:
        with self._lock:
            self.decode_errors += 1

    def reconnected(self) -> None:
        with self._lock:
            self.reconnects += 1

    def snapshot(self) -> IngestStats:
        with self._lock:
            lag = 0.0
            # frames the sampler skips are not waiting for the encoder: measure from the newest kept one
            if self.last_sampled_t is not None:
                lag = max(0.0, self.last_sampled_t - (self.last_delivered_t or 0.0))
            return IngestStats(
                state=self.state.value,
                frames_decoded=self.frames_decoded,
                frames_sampled=self.frames_sampled,
                frames_delivered=self.frames_delivered,
                frames_dropped=dict(self.frames_dropped),
                decode_errors=self.decode_errors,
                reconnects=self.reconnects,
                encode_lag_s=lag,
                last_decoded_t=self.last_decoded_t,
                last_delivered_t=self.last_delivered_t,
                width=self.width,
                height=self.height,
                last_error=self.last_error.to_dict() if self.last_error else None,
                time_base=self.time_base.to_dict(),
            )
