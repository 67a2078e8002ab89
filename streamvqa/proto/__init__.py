"""Wire message types of the streamvqa API (pydantic), shared by server, clients and tests."""

from .errors import ERROR_STATUS, ApiError, ErrorBody, ErrorDetail, status_for
from .questions import (
    AnswerResponse,
    EvidenceRange,
    QuestionRequest,
    Timings,
    WsAnswer,
    WsError,
    WsQuestion,
    WsServerMessage,
    WsToken,
)
from .streams import LastError, StreamCreate, StreamInfo, StreamList

__all__ = [
    "ERROR_STATUS",
    "AnswerResponse",
    "ApiError",
    "ErrorBody",
    "ErrorDetail",
    "EvidenceRange",
    "LastError",
    "QuestionRequest",
    "StreamCreate",
    "StreamInfo",
    "StreamList",
    "Timings",
    "WsAnswer",
    "WsError",
    "WsQuestion",
    "WsServerMessage",
    "WsToken",
    "status_for",
]
