"""Typed messages between the processes of the multi-process topology (server, encoder, kvstore,
answer worker). See docs/processes.md.

Wire format (ZeroMQ multipart, DEALER -> ROUTER): frame 0 is a JSON envelope validated by
pydantic (`Request` / `Reply`), the following frames are raw binary attachments (a video frame,
a stream's representative keys) described by a `TensorRef` in the body: dtype from a short
whitelist, shape, byte length checked. Nothing is pickled: a peer can at worst send JSON that
fails validation or bytes that fail a size check.

Block bytes never travel here: blocks move through shared memory, the messages carry segment
names, offsets, lengths and leases (`Descriptor`).
"""

from __future__ import annotations

import json
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

VERSION = 1
MAX_ATTACHMENT_BYTES = 256 << 20  # one 4K RGB frame is 25 MB; rep keys are far smaller

# dtype names a TensorRef may carry, and their numpy / torch types
_NP = {"uint8": np.uint8, "float32": np.float32, "float16": np.float16, "int64": np.int64}
_TORCH = {"uint8": torch.uint8, "float32": torch.float32, "float16": torch.float16, "int64": torch.int64,
          "bfloat16": torch.bfloat16}


class IpcError(Exception):
    """An error a peer reported (or the transport detected); `code` is stable, like ApiError's."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class Empty(_Msg):
    pass


class TensorRef(_Msg):
    """Describes attachment `index` of the same message."""

    index: int = Field(ge=0, le=15)
    dtype: Literal["uint8", "float32", "float16", "int64", "bfloat16"]
    shape: list[int] = Field(max_length=8)


# ----------------------------------------------------------------------------- envelope


class Request(_Msg):
    v: Literal[1] = VERSION
    id: str = Field(min_length=1, max_length=64)
    op: str = Field(min_length=1, max_length=32)
    body: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(_Msg):
    code: str = Field(max_length=64)
    message: str = Field(max_length=4000)


class Reply(_Msg):
    v: Literal[1] = VERSION
    id: str = Field(min_length=1, max_length=64)
    kind: Literal["ok", "event", "error"]
    body: dict[str, Any] = Field(default_factory=dict)
    error: ErrorBody | None = None


# ----------------------------------------------------------------------------- common


class Ping(_Msg):
    pass


class Pong(_Msg):
    role: str
    pid: int
    info: dict[str, Any] = Field(default_factory=dict)


class StreamRef(_Msg):
    stream_id: str = Field(min_length=1, max_length=128)


# ----------------------------------------------------------------------------- kvstore


class OpenStore(_Msg):
    """First call of every client: the model fingerprint the store keys blocks with. The first
    one opens the store (recovering durable tiers); a different fingerprint later is refused."""

    fingerprint: str = Field(min_length=1, max_length=128)


class StoreOpened(_Msg):
    fingerprint: str
    recovered: int


class PutBlock(_Msg):
    """An encoded block (store/format.py) staged by the writer in its own shared-memory segment.
    The store verifies it (checksum, fingerprint), copies it into its tier and acknowledges."""

    stream_id: str = Field(min_length=1, max_length=128)
    index: int = Field(ge=0)
    segment: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,200}$")
    length: int = Field(gt=0)


class PutAck(_Msg):
    stream_id: str
    index: int


class IndexRequest(_Msg):
    stream_id: str = Field(min_length=1, max_length=128)
    available_only: bool = True  # leave out blocks whose only copies sit in an unreachable tier


class IndexReply(_Msg):
    indices: list[int]
    times: list[tuple[float, float]]
    tiers: list[str | None]  # warmest tier per block (or "pending")
    unavailable: list[int] = Field(default_factory=list)  # left out: only in a tier that is down
    degraded: list[str] = Field(default_factory=list)  # tiers that are down now
    rep_keys: TensorRef | None = None


class LeaseRequest(_Msg):
    stream_id: str = Field(min_length=1, max_length=128)
    indices: list[int] = Field(max_length=4096)
    ttl_s: float = Field(30.0, gt=0, le=3600)


class Descriptor(_Msg):
    """`streamvqa.store.leases.BlockDescriptor` on the wire."""

    stream_id: str
    index: int
    fingerprint: str
    segment: str
    offset: int
    length: int
    generation: int
    lease_id: str
    expires_at: float


class LeaseReply(_Msg):
    descriptors: list[Descriptor]


class ReleaseRequest(_Msg):
    lease_id: str = Field(min_length=1, max_length=64)


class UsageRequest(_Msg):
    stream_id: str | None = None


class Usage(_Msg):
    bytes: dict[str, int]
    blocks: dict[str, int]


class Health(_Msg):
    ok: bool
    degraded: list[str] = Field(default_factory=list)
    pending_items: int = 0
    tiers: dict[str, dict[str, Any]] = Field(default_factory=dict)


# ----------------------------------------------------------------------------- encoder


class OpenStream(_Msg):
    stream_id: str = Field(min_length=1, max_length=128)
    method: str = Field(min_length=1, max_length=64)
    options: dict[str, Any] = Field(default_factory=dict)
    resume: bool = False  # continue after the stream's last stored block (encoder restart)


class StreamOpened(_Msg):
    stream_id: str
    next_index: int  # blocks already stored (resume) or 0
    # the method keeps state the store does not hold (a retained memory, a retriever's own
    # index): questions go to this encoder (`enc.ask`), which holds the exact session
    answers_here: bool = False


class PushFrame(_Msg):
    stream_id: str = Field(min_length=1, max_length=128)
    t: float
    image: TensorRef


class EncoderStats(_Msg):
    """The encoder session's counters after a frame (the server keeps them for GET / metrics)."""

    frames_received: int
    frames_encoded: int
    units_encoded: int
    window_tokens: int
    window_bytes: int
    window_blocks: int
    encode_seconds_total: float
    last_unit_seconds: float = 0.0
    last_unit_frames: int = 0
    next_index: int  # blocks acknowledged by the store so far (indices below are durable-acked)


class StartIngest(_Msg):
    """Run a URL source's ingest (PyAV: rtsp/http/file) in the encoder, feeding the stream's
    session. `config` holds `IngestConfig` fields, validated again by the encoder; the URL is
    the one the server's URL policy resolved and allowed (the encoder applies no policy)."""

    stream_id: str = Field(min_length=1, max_length=128)
    config: dict[str, Any]


class IngestPoll(_Msg):
    """A stream's ingest as the encoder sees it: the ingest's counters (`IngestStats.to_dict()`
    of this encoder's ingest, from zero after a restart) and what the session took since the
    previous poll (deltas: the server adds them up, so a restart loses none)."""

    active: bool  # an ingest was started here for the stream
    stats: dict[str, Any] = Field(default_factory=dict)
    frames: int = 0  # frames the session took since the last poll
    last_t: float | None = None  # stream time of the newest of them
    units: list[tuple[float, int]] = Field(default_factory=list, max_length=100_000)  # (encode s, frames)
    encoder: EncoderStats | None = None  # the session's window after them


class MetricsText(_Msg):
    """Prometheus text exposition of a worker's own metrics (the answer worker's vLLM)."""

    text: str = ""


class ModelInfo(_Msg):
    methods: list[str]
    model: dict[str, Any]


# ----------------------------------------------------------------------------- answer worker


class Ask(_Msg):
    stream_id: str = Field(min_length=1, max_length=128)
    method: str = Field(min_length=1, max_length=64)
    options: dict[str, Any] = Field(default_factory=dict)
    question: str = Field(min_length=1, max_length=100_000)
    max_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    at: float | None = None
    seed: int | None = None
    ask_id: str | None = Field(None, max_length=64, description="names the question for ans.cancel")


class CancelAsk(_Msg):
    ask_id: str = Field(min_length=1, max_length=64)


class TokenMsg(_Msg):
    text: str
    token_id: int
    index: int


class AnswerMsg(_Msg):
    """`streamvqa.engine.types.Answer` on the wire, plus what the answer could not use."""

    text: str
    token_ids: list[int]
    evidence: list[tuple[float, float]]
    timings: dict[str, float]
    finish_reason: str
    tiers: dict[str, int] = Field(default_factory=dict)
    evidence_scores: list[dict[str, Any]] = Field(default_factory=list)
    retrieved_blocks: int = 0
    reused_cache: bool = False
    degraded: list[str] = Field(default_factory=list)  # tiers that were down (answer from warm tiers)


# op -> (request body model, reply body model); streaming ops also send `event` replies
OPS: dict[str, tuple[type[_Msg], type[_Msg]]] = {
    "ping": (Ping, Pong),
    "store.open": (OpenStore, StoreOpened),
    "store.put": (PutBlock, PutAck),
    "store.index": (IndexRequest, IndexReply),
    "store.lease": (LeaseRequest, LeaseReply),
    "store.release": (ReleaseRequest, Empty),
    "store.drop": (StreamRef, Empty),
    "store.usage": (UsageRequest, Usage),
    "store.health": (Empty, Health),
    "enc.info": (Empty, ModelInfo),
    "enc.open": (OpenStream, StreamOpened),
    "enc.frame": (PushFrame, EncoderStats),
    "enc.close": (StreamRef, Empty),
    "enc.ingest": (StartIngest, Empty),  # start (or restart) a URL source's ingest here
    "enc.poll": (StreamRef, IngestPoll),
    "enc.ingest_stop": (StreamRef, IngestPoll),  # stop it; the final deltas
    "enc.ask": (Ask, AnswerMsg),  # events: TokenMsg; streams whose state lives in the encoder
    "enc.cancel": (CancelAsk, Empty),
    "ans.ask": (Ask, AnswerMsg),  # events: TokenMsg
    "ans.forget": (StreamRef, Empty),
    "ans.cancel": (CancelAsk, Empty),  # the caller went away: stop generating
    "ans.metrics": (Empty, MetricsText),  # the answer engine's metrics (vLLM's and the connector's)
}
EVENTS: dict[str, type[_Msg]] = {"ans.ask": TokenMsg, "enc.ask": TokenMsg}


# ----------------------------------------------------------------------------- (de)serialisation


def pack(envelope: Request | Reply, attachments: list[bytes | memoryview] = ()) -> list[bytes | memoryview]:
    return [envelope.model_dump_json().encode(), *attachments]


def unpack_request(frames: list[bytes]) -> tuple[Request, BaseModel, list[bytes]]:
    """Validate a request: envelope, known op, body model. Raises IpcError (never anything else)."""
    if not frames:
        raise IpcError("invalid_message", "empty message")
    try:
        req = Request.model_validate_json(frames[0])
    except ValidationError as e:
        raise IpcError("invalid_message", _first(e)) from None
    if req.op not in OPS:
        raise IpcError("unknown_op", f"unknown op {req.op!r}")
    atts = frames[1:]
    _check_attachments(atts)
    try:
        body = OPS[req.op][0].model_validate(req.body)
    except ValidationError as e:
        raise IpcError("invalid_message", f"{req.op}: {_first(e)}") from None
    return req, body, atts


def unpack_reply(op: str, frames: list[bytes]) -> tuple[Reply, BaseModel | None, list[bytes]]:
    """Validate a reply to `op`: an `ok` body against the op's reply model, an `event` against
    its event model; an `error` reply is raised as IpcError."""
    try:
        rep = Reply.model_validate_json(frames[0])
    except (ValidationError, IndexError) as e:
        raise IpcError("invalid_message", f"bad reply: {e}") from None
    if rep.kind == "error":
        err = rep.error or ErrorBody(code="internal", message="error without detail")
        raise IpcError(err.code, err.message)
    atts = frames[1:]
    _check_attachments(atts)
    model = OPS[op][1] if rep.kind == "ok" else EVENTS.get(op)
    if model is None:
        raise IpcError("invalid_message", f"{op} does not stream events")
    try:
        return rep, model.model_validate(rep.body), atts
    except ValidationError as e:
        raise IpcError("invalid_message", f"{op} reply: {_first(e)}") from None


def _check_attachments(atts: list[bytes]) -> None:
    if len(atts) > 16:
        raise IpcError("invalid_message", f"{len(atts)} attachments; at most 16")
    for a in atts:
        if len(a) > MAX_ATTACHMENT_BYTES:
            raise IpcError("invalid_message", f"attachment of {len(a)} bytes; limit {MAX_ATTACHMENT_BYTES}")


def _first(e: ValidationError) -> str:
    err = e.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"


def error_reply(rid: str, code: str, message: str) -> Reply:
    return Reply(id=rid or "-", kind="error", error=ErrorBody(code=code[:64], message=message[:4000]))


# ----------------------------------------------------------------------------- tensors


def tensor_ref(t: torch.Tensor | np.ndarray, index: int) -> tuple[TensorRef, memoryview]:
    """Describe a CPU tensor / array as attachment `index`; returns the ref and its bytes."""
    if isinstance(t, np.ndarray):
        arr = np.ascontiguousarray(t)
        name = str(arr.dtype)
        if name not in _NP:
            raise IpcError("invalid_message", f"dtype {name} cannot travel")
        return TensorRef(index=index, dtype=name, shape=list(arr.shape)), memoryview(arr).cast("B")
    t = t.detach().cpu().contiguous()
    name = str(t.dtype).removeprefix("torch.")
    if name not in _TORCH:
        raise IpcError("invalid_message", f"dtype {name} cannot travel")
    raw = t.view(torch.uint8) if t.numel() else torch.empty(0, dtype=torch.uint8)
    return TensorRef(index=index, dtype=name, shape=list(t.shape)), memoryview(raw.numpy()).cast("B")


def _nbytes(ref: TensorRef) -> int:
    n = 1
    for s in ref.shape:
        if s < 0:
            raise IpcError("invalid_message", "negative dimension")
        n *= s
    return n * torch.empty(0, dtype=_TORCH[ref.dtype]).element_size()


def _attachment(ref: TensorRef, atts: list[bytes]) -> bytes:
    if ref.index >= len(atts):
        raise IpcError("invalid_message", f"attachment {ref.index} missing")
    raw = atts[ref.index]
    if len(raw) != _nbytes(ref):
        raise IpcError("invalid_message", f"attachment {ref.index}: {len(raw)} bytes for {ref.dtype}{ref.shape}")
    return raw


def to_numpy(ref: TensorRef, atts: list[bytes]) -> np.ndarray:
    if ref.dtype not in _NP:
        raise IpcError("invalid_message", f"dtype {ref.dtype} is not an array dtype")
    return np.frombuffer(_attachment(ref, atts), dtype=_NP[ref.dtype]).reshape(ref.shape)


def to_tensor(ref: TensorRef, atts: list[bytes]) -> torch.Tensor:
    raw = bytearray(_attachment(ref, atts))  # owned and writable: torch wants both
    if not raw:
        return torch.empty(ref.shape, dtype=_TORCH[ref.dtype])
    return torch.frombuffer(raw, dtype=torch.uint8).view(_TORCH[ref.dtype]).reshape(ref.shape)


def dumps(model: BaseModel) -> dict[str, Any]:
    """A body as JSON-compatible data (what goes into an envelope)."""
    return json.loads(model.model_dump_json())
