"""Stable API error codes and their HTTP statuses (clients match on ``code``, never on messages)."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_serializer

#: code -> HTTP status. Codes are stable: add new ones, never rename or re-map existing ones.
ERROR_STATUS: dict[str, int] = {
    # request shape
    "invalid_request": 422,  # body/params fail validation; a source URL that does not parse
    "malformed_json": 400,  # the body is not JSON (not UTF-8, nested too deeply, a syntax error)
    "payload_too_large": 413,  # body or WebSocket message over the configured byte limit
    "question_too_long": 413,  # question over max_question_chars or max_question_tokens (model tokens)
    "invalid_options": 422,  # method options rejected by the engine
    "unknown_method": 400,  # method not in engine.methods()
    "unsupported_scheme": 400,  # URL scheme not rtsp/rtsps/http/https/file (WebRTC: use /v1/whip)
    "unsupported_media_type": 415,  # WHIP offer without Content-Type application/sdp
    "method_not_allowed": 405,
    "not_found": 404,
    # streams
    "unknown_stream": 404,
    "stream_exists": 409,
    "empty_stream": 409,  # a question before any frame was encoded
    "stream_failed": 409,  # a question the stream cannot answer because its source failed (last error in message)
    "stream_closed": 409,  # the stream was deleted while the question ran
    "too_many_streams": 429,
    "too_many_questions": 429,  # concurrent questions per WebSocket connection, per stream, or queued per key
    # security (see docs/security.md)
    "unauthorized": 401,  # no API key, or not a valid one
    "url_forbidden": 403,  # source URL outside the URL policy (media root, private networks, redirects)
    "rate_limited": 429,  # questions per minute of the key, or WebSocket messages per minute
    "quota_exceeded": 429,  # the key's stream or memory quota
    # sources (synchronous with ?probe=true; otherwise visible as last_error in GET)
    "source_unreachable": 422,
    "unsupported_codec": 422,
    "no_video_stream": 422,
    "decode_error": 422,
    "resolution_too_large": 422,
    "retries_exhausted": 422,
    "probe_timeout": 504,  # ?probe=true: the source did not answer within probe_timeout_s
    # server
    "not_ready": 503,  # the model is still loading
    "worker_unavailable": 503,  # multi topology: a worker is restarting; retry shortly
    "store_unavailable": 503,  # the blocks a question needs are in a store tier that is down
    "stream_moving": 503,  # cluster: the stream's replica is gone and another is adopting it; retry shortly
    "internal_error": 500,  # a bug; generic message + request_id, details only in the server log
}


def status_for(code: str) -> int:
    """HTTP status of an error code (500 for a code not in the table; the server answers such a
    code as ``internal_error``)."""
    return ERROR_STATUS.get(code, 500)


class ErrorDetail(BaseModel):
    """The inner object of every error body."""

    code: str = Field(description="stable machine-readable code; see ERROR_STATUS")
    message: str = Field(description="human-readable detail; not stable")
    request_id: str | None = Field(
        default=None, description="internal_error only: quote it to the operator (the server log has the detail)"
    )

    @model_serializer(mode="wrap")
    def _without_unset_request_id(self, handler):  # noqa: ANN001, ANN202 - pydantic's wrap signature
        # the body stays {"code", "message"} for every error but internal_error
        data = handler(self)
        if data.get("request_id") is None:
            data.pop("request_id", None)
        return data


class ErrorBody(BaseModel):
    """Every non-2xx JSON response: ``{"error": {"code": ..., "message": ...}}``."""

    error: ErrorDetail

    @classmethod
    def of(cls, code: str, message: str, request_id: str | None = None) -> ErrorBody:
        return cls(error=ErrorDetail(code=code, message=message, request_id=request_id))



class ApiError(Exception):
    """Raised anywhere in the server; rendered as :class:`ErrorBody` with :func:`status_for`."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status if status is not None else status_for(code)

    def body(self) -> dict:
        return ErrorBody.of(self.code, self.message).model_dump()
