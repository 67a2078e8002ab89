"""Stream messages: what ``POST /v1/streams`` takes and what ``GET /v1/streams/{id}`` returns."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class StreamCreate(BaseModel):
    """Body of ``POST /v1/streams``."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="rtsp://, rtsps://, http://, https://, file:// URL or a local path",
                     min_length=1, max_length=4096)
    fps: float | None = Field(None, gt=0, le=120, description="sampling rate (frames per second of stream time)")
    method: str | None = Field(None, description="method preset (see GET /v1/methods); server default if omitted")
    options: dict[str, Any] | None = Field(None, description="method options passed to the engine")
    name: str | None = Field(None, max_length=200, description="a label for humans")


class LastError(BaseModel):
    code: str
    message: str


class TimeSegment(BaseModel):
    """One continuous piece of a stream (first connection, a reconnect, a resume)."""

    t: float = Field(description="stream time (s) of the segment's first frame")
    source_pts: float | None = Field(None, description="the source's presentation time (s) of that frame")
    wall_clock: float | None = Field(None, description="unix time that frame was decoded (null: not live/paced)")


class TimeBase(BaseModel):
    """How stream time maps to the source's timestamps and to the wall clock.

    Inside a segment both advance with stream time: ``source = source_pts + (t - segment.t)``,
    ``wall = wall_clock + (t - segment.t)``, using the last segment that started at or before ``t``.
    """

    source_pts_at_zero: float | None = Field(None, description="source presentation time (s) at stream time 0")
    wall_clock_at_zero: float | None = Field(None, description="unix time at stream time 0 (null: not live/paced)")
    segments: list[TimeSegment] = Field(default_factory=list, description="first and most recent 63 kept")


STREAM_STATES = "connecting | running | reconnecting | recovering | ended | failed | stopped"


class StreamInfo(BaseModel):
    """One stream as the API shows it."""

    id: str
    name: str | None = None
    url: str
    state: str = Field(description=STREAM_STATES)
    method: str
    fps: float
    frames_decoded: int = 0
    frames_sampled: int = 0
    frames_delivered: int = 0
    frames_encoded: int = 0
    frames_dropped: dict[str, int] = Field(default_factory=dict, description="by reason")
    units_encoded: int = 0
    reconnects: int = 0
    encode_lag_s: float = Field(0.0, description="newest decoded frame t minus newest delivered frame t")
    last_frame_t: float | None = Field(None, description="stream time of the newest encoded frame")
    memory_bytes: dict[str, int] = Field(default_factory=dict, description="KV bytes per tier")
    memory_blocks: dict[str, int] = Field(default_factory=dict, description="KV blocks per tier")
    last_error: LastError | None = None
    time_base: TimeBase | None = Field(None, description="stream time -> source pts / wall clock; null before a frame")
    created_at: float = Field(description="unix time")


class StreamList(BaseModel):
    streams: list[StreamInfo]
