"""Methods are named presets of stage policies; `options` override a preset's fields."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamvqa.policies.retrieval import RETRIEVERS, Retriever, RetrieverUnavailable, build_retriever


class MethodConfig(BaseModel):
    """Per-stream policy choices. Validated at the edge; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    unit_frames: int = Field(1, ge=1, le=64, description="frames per stream unit (stage 1)")
    n_local: int | None = Field(15000, ge=1, description="local window in tokens (stage 3); None: unbounded")
    retrieval: Literal[tuple(RETRIEVERS)] = "rekv"  # type: ignore[valid-type]  # policies/retrieval/__init__.py
    topk: int | None = Field(64, ge=1, description="blocks retrieved per layer (stage 7)")
    similarity: Literal["dot", "cosine"] = "dot"
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
}


class MethodError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def resolve(method: str, options: dict | None = None) -> MethodConfig:
    if method not in PRESETS:
        raise MethodError("unknown_method", f"unknown method {method!r}; known: {', '.join(PRESETS)}")
    base = PRESETS[method][1]
    try:
        config = MethodConfig.model_validate({**base.model_dump(), **(options or {})})
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
    return [{"name": n, "description": d, "policies": c.model_dump()} for n, (d, c) in PRESETS.items()]
