"""Question / answer messages for REST and the WebSocket."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class QuestionRequest(BaseModel):
    """Body of ``POST /v1/streams/{id}/questions``."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, description="cap on generated tokens (server limit applies)")
    temperature: float | None = Field(None, ge=0, le=10)
    top_p: float | None = Field(None, gt=0, le=1)
    at: float | None = Field(
        None, ge=0, description="stream time (s): wait until the stream was encoded up to here, then answer"
    )


class Timings(BaseModel):
    queue_s: float = 0.0
    retrieval_s: float = 0.0
    prefill_s: float = 0.0
    first_token_s: float = 0.0
    total_s: float = 0.0


class EvidenceRange(BaseModel):
    """A span of stream time the answer drew on (its frames and the time each stood for), also
    on the source's clock and the wall clock where the stream's time base knows them."""

    t_start: float
    t_end: float
    source_start: float | None = Field(None, description="source presentation time (s) at t_start")
    source_end: float | None = Field(None, description="source presentation time (s) at t_end")
    wall_clock_start: float | None = Field(None, description="unix time at t_start (null: not live/paced)")
    wall_clock_end: float | None = Field(None, description="unix time at t_end (null: not live/paced)")


class AnswerResponse(BaseModel):
    """The answer to one question."""

    answer: str
    evidence: list[EvidenceRange] = Field(default_factory=list)
    timings: Timings = Field(default_factory=Timings)
    tokens: int = Field(0, description="generated tokens")
    finish_reason: str = Field("stop", description="stop | length")
    tiers: dict[str, int] = Field(default_factory=dict, description="retrieved blocks per tier")


# ----------------------------------------------------------------------------------- WebSocket


class WsQuestion(QuestionRequest):
    """Client -> server: ask; answers to concurrent questions are keyed by ``request_id``."""

    type: Literal["question"] = "question"
    request_id: str = Field(min_length=1, max_length=128)


class WsToken(BaseModel):
    """Server -> client: one generated token's text (``index`` counts from 0, gaps = dropped)."""

    type: Literal["token"] = "token"
    request_id: str
    index: int
    text: str


class WsAnswer(AnswerResponse):
    """Server -> client: the final answer (full text; sent once per question)."""

    type: Literal["answer"] = "answer"
    request_id: str


class WsError(BaseModel):
    """Server -> client: a question (or message) failed; ``request_id`` is null when unknown."""

    type: Literal["error"] = "error"
    request_id: str | None = None
    error: dict[str, str]


WsServerMessage = Annotated[WsToken | WsAnswer | WsError, Field(discriminator="type")]
