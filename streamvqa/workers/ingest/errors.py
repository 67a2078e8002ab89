"""Ingest failures with stable machine-readable codes (the API returns them verbatim)."""

from __future__ import annotations

from typing import Literal, get_args

IngestErrorCode = Literal[
    "unsupported_scheme",  # URL scheme is not rtsp/rtsps/http/https/file (or a plain path)
    "source_unreachable",  # connection refused, DNS failure, timeout, HTTP 4xx/5xx, missing file
    "unsupported_codec",  # a video stream exists but no decoder is available for it
    "no_video_stream",  # the container has no video stream (e.g. audio only)
    "decode_error",  # the bytes are not a readable container, or decoding failed for good
    "resolution_too_large",  # decoded frames exceed the hard decode-resolution limit
    "retries_exhausted",  # the source dropped and every reconnect attempt failed
]

ERROR_CODES: tuple[str, ...] = get_args(IngestErrorCode)


class IngestError(Exception):
    """A classified ingest failure.

    Attributes:
        code: one of :data:`ERROR_CODES`; stable, safe to match on.
        message: human-readable detail (may include FFmpeg's message); not stable.
    """

    def __init__(self, code: IngestErrorCode, message: str) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown ingest error code {code!r}")
        super().__init__(f"{code}: {message}")
        self.code: IngestErrorCode = code
        self.message = message

    def to_dict(self) -> dict[str, str]:
        """``{"code": ..., "message": ...}``, the shape of the API's error body."""
        return {"code": self.code, "message": self.message}

    def __reduce__(self):  # keep code/message when pickled across processes
        return (IngestError, (self.code, self.message))
