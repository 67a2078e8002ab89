"""What the engine hands back: streamed tokens, final answers, per-stream statistics."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class TokenEvent:
    text: str
    token_id: int
    index: int


@dataclass
class Answer:
    text: str
    token_ids: list[int]
    evidence: list[tuple[float, float]]  # time ranges of the blocks the answer cache was built from
    timings: dict[str, float]  # queue_s, retrieval_s, prefill_s, first_token_s, total_s
    finish_reason: str  # "stop" | "length"
    tiers: dict[str, int] = field(default_factory=dict)  # blocks served per tier (before promotion)
    blocks_per_layer: list[list[int]] = field(default_factory=list)
    # per block used: its time range, the fraction of layers that chose it, its mean z-scored score
    evidence_scores: list[dict] = field(default_factory=list)
    retrieved_blocks: int = 0  # blocks per layer (adaptive with score_mass)
    reused_cache: bool = False  # a follow-up that found the same blocks reused the previous answer cache
    degraded: list[str] = field(default_factory=list)  # store tiers that were down (multi topology)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("blocks_per_layer")
        return d


@dataclass
class SessionStats:
    method: str
    frames_received: int = 0
    frames_encoded: int = 0
    units_encoded: int = 0
    window_tokens: int = 0
    kv_bytes: dict[str, int] = field(default_factory=dict)
    kv_blocks: dict[str, int] = field(default_factory=dict)
    last_frame_t: float | None = None
    encode_seconds_total: float = 0.0
    frames_merged: int = 0  # redundant frames averaged into a neighbour (StreamMem filter, StreamKV cap)
    units_dropped: int = 0  # units not written because the stream's store budget was spent
    tokens_evicted: int = 0  # retained-memory tokens dropped by retention (summed over layers)
    memory_tokens: list[int] = field(default_factory=list)  # retained tokens per layer
    kv_peak_bytes: dict[str, int] = field(default_factory=dict)  # highest bytes seen per tier

    def to_dict(self) -> dict:
        return asdict(self)
