"""Methods are named presets of stage policies; `options` override a preset's fields."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamvqa.policies.retrieval import AllBlocks, ReKVRetriever, Retriever, WindowOnly


class MethodConfig(BaseModel):
    """Per-stream policy choices. Validated at the edge; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    unit_frames: int = Field(1, ge=1, le=64, description="frames per stream unit (stage 1)")
    n_local: int | None = Field(15000, ge=1, description="local window in tokens (stage 3); None: unbounded")
    retrieval: Literal["all", "rekv", "window"] = "rekv"
    topk: int | None = Field(64, ge=1, description="blocks retrieved per layer (stage 7)")
    similarity: Literal["dot", "cosine"] = "dot"
    score_mass: float | None = Field(None, gt=0, le=1, description="adaptive k: blocks covering this score mass")
    min_blocks: int = Field(1, ge=1, description="floor of the adaptive k (topk is its ceiling)")
    positions: Literal["contiguous", "original"] = "contiguous"

    def retriever(self) -> Retriever:
        if self.retrieval == "all":
            return AllBlocks()
        if self.retrieval == "window":
            return WindowOnly()
        return ReKVRetriever(self.topk, self.similarity, self.score_mass, self.min_blocks)


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
        return MethodConfig.model_validate({**base.model_dump(), **(options or {})})
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise MethodError("invalid_options", f"invalid option {where}: {first['msg']}") from None


def describe() -> list[dict]:
    return [{"name": n, "description": d, "policies": c.model_dump()} for n, (d, c) in PRESETS.items()]
