"""Methods are named presets of stage policies; `options` override a preset's fields."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streamvqa.policies.registry import (
    ALIASES,
    RETENTIONS,
    build_reduction,
    build_retention,
    canonical,
    reduction_options,
    retention_options,
)
from streamvqa.policies.retrieval import RETRIEVERS, Retriever, RetrieverUnavailable, build_retriever


class MethodConfig(BaseModel):
    """Per-stream policy choices. Validated at the edge; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    unit_frames: int = Field(1, ge=1, le=64, description="frames per stream unit (stage 1)")
    n_local: int | None = Field(15000, ge=1, description="local window in tokens (stage 3); None: unbounded")
    retrieval: Literal[tuple(RETRIEVERS)] = "rekv"  # type: ignore[valid-type]  # policies/retrieval/__init__.py
    topk: int | None = Field(64, ge=1, description="blocks retrieved per layer (stage 7)")
    # cosine: evidence recall 0.767 vs 0.433 for dot on the needle eval (docs/architecture.md)
    similarity: Literal["dot", "cosine"] = "cosine"
    score_mass: float | None = Field(None, gt=0, le=1, description="adaptive k: blocks covering this score mass")
    min_blocks: int = Field(1, ge=1, description="floor of the adaptive k (topk is its ceiling)")
    positions: Literal["contiguous", "original", "time-aware"] = "contiguous"
    # retrieval-policy knobs (stage 7); each policy's docstring gives its paper's defaults
    local_blocks: int = Field(8, ge=0, description="StreamKV: most recent blocks always retrieved")
    size_temp: float = Field(0.5, ge=0, lt=1, description="StreamKV: per-layer size range topk*(1 +- size_temp)")
    max_blocks: int = Field(128, ge=1, description="StreamKV: ceiling of a layer's retrieval size")
    page_size: int = Field(16, ge=1, description="LiveVLM PaR: tokens per page")
    page_ratio: float = Field(0.4, gt=0, le=1, description="LiveVLM PaR: fraction of pages retrieved")
    retrieve_tokens: int = Field(12544, ge=1, description="StreamingTOM: tokens retrieved per layer (groups)")
    caption_tokens: int = Field(20000, ge=1, description="rLiVS: caption token budget")
    mmr_lambda: float = Field(0.5, ge=0, le=1, description="rLiVS: MMR relevance weight")
    caption_blocks: bool = Field(False, description="rLiVS: add ReKV top-k blocks to the captions")
    encoder_dir: str | None = Field(None, description="ReKV external: local CLIP/SigLIP directory")
    time_gap_scale: float = Field(0.1, ge=0, le=1, description="time-aware positions: kept share of a gap")
    time_max_gap: int | None = Field(256, ge=0, description="time-aware positions: longest gap kept")

    # -- memory policies (stages 1, 2, 3 and 5); each policy's docstring gives its paper's defaults
    units: Literal["fixed", "semantic"] = Field("fixed", description="stage 1: unit_frames per unit, or StreamKV segments")
    segment_theta: float = Field(0.99, ge=-1, le=1, description="StreamKV: adjacent-frame cosine that keeps a segment open")
    min_segment: int = Field(4, ge=1, description="StreamKV: frames before a segment may close")
    max_segment: int = Field(64, ge=2, description="StreamKV: frames at most (the most similar pair is merged)")
    summary: bool = Field(False, description="StreamKV: encode the segment's mean frame after it, always kept")
    frame_filter: float | None = Field(None, gt=0, le=1, description="StreamMem delta: merge a frame into the previous one above this cosine")
    reduction: Literal["none", "ctr"] = Field("none", description="stage 2: pre-LLM token reduction")
    reduction_options: dict = Field(default_factory=dict, description="options of the reduction policy")
    encode_on: Literal["window", "memory"] = Field("window", description="stage 3: encode on the sliding window or on the retained memory")
    retention: Literal[tuple(RETENTIONS)] = Field("none", description="stage 5 policy; none: every unit to the store")  # type: ignore[valid-type]
    retention_options: dict = Field(default_factory=dict, description="options of the retention policy")
    memory_tokens: int | None = Field(None, ge=1, description="retained memory, tokens per layer; None: no token cap")
    budget_bytes: dict[Literal["device", "memory", "store"], int] = Field(
        default_factory=dict, description="per-stream byte budgets: encoder cache, retained memory, stored blocks")
    demote: bool = Field(False, description="evicted units stay retrievable in the store (demote, don't delete)")
    keep_memory: bool = Field(False, description="answer from the whole retained memory plus retrieved demoted units")

    @model_validator(mode="after")
    def _memory_policies(self) -> MethodConfig:
        if self.retention == "none" and (self.encode_on == "memory" or self.keep_memory):
            raise ValueError("encode_on='memory' and keep_memory need a retention policy")
        retention_options(self.retention, self.retention_options)
        reduction_options(self.reduction, self.reduction_options)
        if any(v <= 0 for v in self.budget_bytes.values()):
            raise ValueError("budget_bytes must be positive")
        return self

    def retention_policy(self):
        """The stage-5 policy object, or None (keep everything: ReKV, full, sliding-window)."""
        return build_retention(self.retention, self.retention_options)

    def reducer(self):
        return build_reduction(self.reduction, self.reduction_options)

    def retriever(self) -> Retriever:
        return build_retriever(self)


PRESETS: dict[str, tuple[str, MethodConfig]] = {
    "full": (
        "Exact mode: every unit kept in the window and retrieved; equals offline full-context inference",
        MethodConfig(n_local=None, retrieval="all", topk=None),
    ),
    "rekv": (
        "ReKV (arXiv 2503.00540): sliding-window encoding with sink tokens, all blocks offloaded, "
        "per-layer top-k retrieval by mean pre-RoPE query, contiguous positions",
        MethodConfig(),
    ),
    "rekv-external": (
        "ReKV with external retrieval (arXiv 2503.00540): frames and question embedded by a local "
        "CLIP/SigLIP (option encoder_dir or STREAMVQA_ENCODER_DIR), the same blocks for every layer",
        MethodConfig(retrieval="rekv-external", topk=64),
    ),
    "sliding-window": (
        "Baseline: sink tokens plus the most recent n_local tokens, no retrieval",
        MethodConfig(n_local=2048, retrieval="window", topk=None),
    ),
    # -- memory policies (docs/methods.md has the table: stage by stage, defaults, paper) ----------
    "streamkv": (
        "StreamKV (arXiv 2511.07278): semantic segments (cos 0.99, 4-64 frames) + summary unit, ReKV "
        "window, guidance-prompt scores with layer-adaptive budgets keeping 60% of each segment's frames",
        MethodConfig(units="semantic", summary=True, retention="streamkv", retrieval="streamkv", topk=64),
    ),
    "infinipot-v": (
        "InfiniPot-V (arXiv 2506.15745): encode on the memory; at |M| tokens compress to 75% by TaR "
        "(key redundancy with recent frames) and VaN (value norm), per head, original positions",
        MethodConfig(n_local=None, encode_on="memory", retention="infinipot-v", memory_tokens=5462,
                     retrieval="all", topk=None, positions="original"),
    ),
    "streammem": (
        "StreamMem (arXiv 2508.15717): redundant frames merged (cos 0.95), 8-frame clips encoded on the "
        "memory, chat-template proxy attention top-k per head + per-frame prototypes, 6K tokens",
        MethodConfig(n_local=None, unit_frames=8, frame_filter=0.95, encode_on="memory", retention="streammem",
                     memory_tokens=6144, retrieval="all", topk=None, positions="original"),
    ),
    "livevlm": (
        "LiveVLM (arXiv 2505.15269): short-term FIFO window of exact KV, long-term memory by Vision Sink "
        "Bucketing (12K tokens), PaR page retrieval",
        MethodConfig(n_local=2048, retention="livevlm", memory_tokens=12000, retrieval="livevlm"),
    ),
    "streamingtom": (
        "StreamingTOM (arXiv 2510.18269): Causal Temporal Reduction to 50 tokens per frame before the "
        "LLM, 4,800-token window, 4-bit Online Quantized Memory, group top-k retrieval",
        MethodConfig(n_local=4800, reduction="ctr", retention="streamingtom", retrieval="streamingtom"),
    ),
    "streamingvlm": (
        "StreamingVLM (arXiv 2510.09608): attention sinks + 16 s vision window + text sink/window "
        "(512/512), encoded on the memory at contiguous positions",
        MethodConfig(n_local=None, encode_on="memory", retention="streamingvlm", retrieval="all", topk=None),
    ),
    "resv": (
        "V-Rex ReSV (arXiv 2512.12284, abstract only; our reading): temporal/spatial key-similarity "
        "clustering per head, per-layer adaptive counts, 6K tokens",
        MethodConfig(retention="resv", memory_tokens=6144, retrieval="all", topk=None),
    ),
    "rlivs": (
        "rLiVS (arXiv 2510.17364): 16-frame clips encoded on 6.25% attention-selected tokens of the "
        "last 16 clips; model-written captions as long-term memory, MMR caption retrieval",
        MethodConfig(n_local=None, unit_frames=16, encode_on="memory", retention="rlivs", keep_memory=True,
                     retrieval="rlivs"),
    ),
    # whole frames, not compacted tokens: a caption cut to a few tokens misleads the LM, and a
    # unit partly kept is served whole to every layer once any layer retrieves it (over budget);
    # a fixed k: a moment's identical frames split an adaptive k's score mass (docs/benchmarks.md)
    "hybrid": (
        "Ours: ReKV window; the most recent 1,024 tokens of whole frames always answered from (FIFO); "
        "every unit demoted to the store and the rest brought back by ReKV top-64",
        MethodConfig(n_local=2048, retention="streamingvlm", memory_tokens=1024, demote=True, keep_memory=True,
                     retention_options={"vision_window_s": 1e9, "text_sink": 0, "text_window": 0},
                     retrieval="rekv", topk=64),
    ),
}

DEFAULT_METHOD = "rekv"  # the server's and `ask-file`'s method when none is named

_MERGED = ("retention_options", "reduction_options", "budget_bytes")  # options add to a preset's dicts


class MethodError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def resolve(method: str, options: dict | None = None) -> MethodConfig:
    method = canonical(method)
    if method not in PRESETS:
        raise MethodError("unknown_method", f"unknown method {method!r}; known: {', '.join(PRESETS)}")
    base = PRESETS[method][1]
    try:
        fields = {**base.model_dump(), **(options or {})}
        for name in _MERGED:
            if isinstance((options or {}).get(name), dict):
                fields[name] = {**getattr(base, name), **options[name]}
        config = MethodConfig.model_validate(fields)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise MethodError("invalid_options", f"invalid option {where}: {first['msg']}") from None
    try:
        RETRIEVERS[config.retrieval].check(config)  # e.g. an external encoder must be configured
    except RetrieverUnavailable as e:
        raise MethodError(e.code, str(e)) from None
    return config


def describe() -> list[dict]:
    return [
        {"name": n, "default": n == DEFAULT_METHOD, "aliases": sorted(a for a, p in ALIASES.items() if p == n),
         "description": d, "policies": c.model_dump()}
        for n, (d, c) in PRESETS.items()
    ]
