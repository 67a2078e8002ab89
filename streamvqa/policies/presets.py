"""Methods are named presets of stage policies; `options` override a preset's fields."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streamvqa.policies.registry import (
    ALIASES,
    RETENTIONS,
    build_reduction,
    build_retention,
    build_units,
    canonical,
    reduction_options,
    retention_options,
)
from streamvqa.policies.retrieval import (
    FLAT_OPTIONS,
    RETRIEVERS,
    Retriever,
    RetrieverUnavailable,
    build_retriever,
    retrieval_options,
)


class MethodConfig(BaseModel):
    """Per-stream policy choices. Validated at the edge; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    unit_frames: int = Field(1, ge=1, le=64, description="frames per stream unit (stage 1)")
    n_local: int | None = Field(15000, ge=1, description="local window in tokens (stage 3); None: unbounded")
    retrieval: Literal[tuple(RETRIEVERS)] = "rekv"  # type: ignore[valid-type]  # policies/retrieval/__init__.py
    # the retrieval policy's own options (its pydantic `Options`: defaults there, unknown refused);
    # a request may still give them at the top level (topk, similarity, ...), see `_flat_retrieval`
    retrieval_options: dict = Field(default_factory=dict, description="options of the retrieval policy")
    positions: Literal["contiguous", "original", "time-aware"] = "contiguous"
    time_gap_scale: float = Field(0.1, ge=0, le=1, description="time-aware positions: kept share of a gap")
    time_max_gap: int | None = Field(256, ge=0, description="time-aware positions: longest gap kept")

    # -- memory policies (stages 1, 2, 3 and 5); each policy's docstring gives its paper's defaults
    units: Literal["fixed", "semantic"] = Field("fixed", description="stage 1: unit_frames per unit, or StreamKV segments")
    segment_theta: float = Field(0.99, ge=-1, le=1, description="StreamKV: adjacent-frame cosine that keeps a segment open")
    min_segment: int = Field(4, ge=1, description="StreamKV: frames before a segment may close")
    max_segment: int = Field(64, ge=2, description="StreamKV: frames at most (the most similar pair is merged)")
    summary: bool = Field(False, description="StreamKV: encode the segment's mean frame after it, always kept")
    frame_filter: float | None = Field(None, gt=0, le=1, description="StreamMem delta: merge a frame into the previous one above this cosine")
    frame_filter_by: Literal["mean", "tokens"] = Field(
        "mean", description="frame filter on the mean visual token (StreamMem) or on every token (a changed token is a new frame)")
    reduction: Literal["none", "ctr"] = Field("none", description="stage 2: pre-LLM token reduction")
    reduction_options: dict = Field(default_factory=dict, description="options of the reduction policy")
    encode_on: Literal["window", "memory"] = Field("window", description="stage 3: encode on the sliding window or on the retained memory")
    retention: Literal[tuple(RETENTIONS)] = Field("none", description="stage 5 policy; none: every unit to the store")  # type: ignore[valid-type]
    retention_options: dict = Field(default_factory=dict, description="options of the retention policy")
    memory_tokens: int | None = Field(None, ge=1, description="retained memory, tokens per layer; None: no token cap")
    budget_bytes: dict[Literal["device", "memory", "store"], int] = Field(
        default_factory=dict, description="per-stream byte budgets: encoder cache, retained memory, stored blocks")
    demote: bool = Field(False, description="evicted units stay retrievable in the store (demote, don't delete)")
    keep_memory: Literal[False, True, "unmatched"] = Field(
        False, description="answer from the whole retained memory plus retrieved demoted units; 'unmatched': the "
        "memory's units compete with them in retrieval, the whole memory read only when the question names nothing")
    answer_from: Literal["kv", "inputs"] = Field(
        "kv", description="stage 8: the chosen units' KV, or their LM inputs prefilled afresh per question")

    @model_validator(mode="before")
    @classmethod
    def _flat_retrieval(cls, data):
        if isinstance(data, dict):
            return fold_flat(data, data.get("retrieval", cls.model_fields["retrieval"].default))
        return data

    @model_validator(mode="after")
    def _memory_policies(self) -> MethodConfig:
        if self.retention == "none" and (self.encode_on == "memory" or self.keep_memory):
            raise ValueError("encode_on='memory' and keep_memory need a retention policy")
        retention_options(self.retention, self.retention_options)
        # stored with the policy's defaults filled in: `streamvqa methods --json` shows them all
        self.retrieval_options = retrieval_options(self.retrieval, self.retrieval_options).model_dump()
        reduction_options(self.reduction, self.reduction_options)
        if any(v <= 0 for v in self.budget_bytes.values()):
            raise ValueError("budget_bytes must be positive")
        return self

    def retention_policy(self):
        """The stage-5 policy object, or None (keep everything: ReKV, full, sliding-window)."""
        return build_retention(self.retention, self.retention_options)

    def reducer(self):
        return build_reduction(self.reduction, self.reduction_options)

    def unit_builder(self, vision):
        """The stage-1 unit builder, given the model's vision (frames, t_start -> piece)."""
        return build_units(self, vision)

    def retriever(self) -> Retriever:
        return build_retriever(self.retrieval, self.retrieval_options)


def fold_flat(options: dict, retrieval: str) -> dict:
    """Top-level retrieval option names (topk, similarity, ...: the request and CLI form before
    `retrieval_options`) moved into `retrieval_options` when policy `retrieval` takes them;
    the others are dropped, as they were always ignored (e.g. `topk` with a policy that sizes
    its own retrieval). Names given in `retrieval_options` itself win."""
    flat = FLAT_OPTIONS & options.keys()
    if not flat:
        return options
    out = {k: v for k, v in options.items() if k not in flat}
    takes = RETRIEVERS[retrieval].policy.Options.model_fields if retrieval in RETRIEVERS else {}
    given = options.get("retrieval_options", {})
    if isinstance(given, dict):  # anything else is refused by the field's own validation
        out["retrieval_options"] = {**{k: options[k] for k in flat if k in takes}, **given}
    return out


PRESETS: dict[str, tuple[str, MethodConfig]] = {
    "full": (
        "Exact mode: every unit kept in the window and retrieved; equals offline full-context inference",
        MethodConfig(n_local=None, retrieval="all"),
    ),
    "rekv": (
        "ReKV (arXiv 2503.00540): sliding-window encoding with sink tokens, all blocks offloaded, "
        "per-layer top-k retrieval by mean pre-RoPE query, contiguous positions",
        MethodConfig(),
    ),
    "rekv-external": (
        "ReKV with external retrieval (arXiv 2503.00540): frames and question embedded by a local "
        "CLIP/SigLIP (option encoder_dir or STREAMVQA_ENCODER_DIR), the same blocks for every layer",
        MethodConfig(retrieval="rekv-external"),
    ),
    "sliding-window": (
        "Baseline: sink tokens plus the most recent n_local tokens, no retrieval",
        MethodConfig(n_local=2048, retrieval="window"),
    ),
    # -- memory policies (docs/methods.md has the table: stage by stage, defaults, paper) ----------
    "streamkv": (
        "StreamKV (arXiv 2511.07278): semantic segments (cos 0.99, 4-64 frames) + summary unit, ReKV "
        "window, guidance-prompt scores with layer-adaptive budgets keeping 60% of each segment's frames",
        MethodConfig(units="semantic", summary=True, retention="streamkv", retrieval="streamkv"),
    ),
    "infinipot-v": (
        "InfiniPot-V (arXiv 2506.15745): encode on the memory; at |M| tokens compress to 75% by TaR "
        "(key redundancy with recent frames) and VaN (value norm), per head, original positions",
        MethodConfig(n_local=None, encode_on="memory", retention="infinipot-v", memory_tokens=5462,
                     retrieval="all", positions="original"),
    ),
    "streammem": (
        "StreamMem (arXiv 2508.15717): redundant frames merged (cos 0.95), 8-frame clips encoded on the "
        "memory, chat-template proxy attention top-k per head + per-frame prototypes, 6K tokens",
        MethodConfig(n_local=None, unit_frames=8, frame_filter=0.95, encode_on="memory", retention="streammem",
                     memory_tokens=6144, retrieval="all", positions="original"),
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
        MethodConfig(n_local=None, encode_on="memory", retention="streamingvlm", retrieval="all"),
    ),
    "resv": (
        "V-Rex ReSV (arXiv 2512.12284, abstract only; our reading): temporal/spatial key-similarity "
        "clustering per head, per-layer adaptive counts, 6K tokens",
        MethodConfig(retention="resv", memory_tokens=6144, retrieval="all"),
    ),
    "rlivs": (
        "rLiVS (arXiv 2510.17364): 16-frame clips encoded on 6.25% attention-selected tokens of the "
        "last 16 clips; model-written captions as long-term memory, MMR caption retrieval",
        MethodConfig(n_local=None, unit_frames=16, encode_on="memory", retention="rlivs", keep_memory=True,
                     retrieval="rlivs"),
    ),
    # whole frames, not compacted tokens: a caption cut to a few tokens misleads the LM, and a
    # unit partly kept is served whole to every layer once any layer retrieves it (over budget);
    # a fixed k: a moment's identical frames split an adaptive k's score mass; a frame that shows
    # what the previous one showed (every visual token cosine > 0.99: the mean hid a one-token
    # change, a new digit) is not encoded again, so each kept or retrieved frame is a different moment. The answer is recomputed from the chosen
    # frames' inputs: a frame's KV, encoded after the stream's other frames, carries what they
    # showed, and the model joined colour and shape across moments. Few frames: the default model
    # reads one relevant frame among 24 far worse than alone, so at most 4 frames that together
    # match the question's words and phrases, and nothing else: the last frames beside them drew
    # counts, places and "which came first" to the present. A question that names nothing any
    # frame shows ("what digit was shown most recently?": its clearest word or phrase match 0.05,
    # against >= 0.65 for one naming a colour or shape) is about the present: the last 4 frames
    # (48 tokens) answer it (the hard set at 60 minutes, docs/benchmarks.md)
    "hybrid": (
        "Ours: repeated frames (every token cosine > 0.99) dropped before the LLM; the fewest frames (at most "
        "4) that together match the question's words and phrases in the LM's input space, or, when it names "
        "nothing any frame shows, the most recent 48 tokens of whole frames; the answer recomputed from the "
        "chosen frames' inputs",
        MethodConfig(n_local=2048, frame_filter=0.99, frame_filter_by="tokens", retention="streamingvlm", memory_tokens=48,
                     keep_memory="unmatched", retention_options={"vision_window_s": 1e9, "text_sink": 0, "text_window": 0},
                     retrieval="input-match", topk=4, min_match=0.25, answer_from="inputs"),
    ),
    # the hybrid for models whose visual tokens are not word-like (input matching needs them)
    "hybrid-kv": (
        "Ours, from stored KV: as hybrid, but every unit demoted to the store and brought back by "
        "ReKV top-64 as its stored KV (for models whose visual tokens are not word-like)",
        MethodConfig(n_local=2048, frame_filter=0.99, retention="streamingvlm", memory_tokens=1024, demote=True,
                     keep_memory=True, retention_options={"vision_window_s": 1e9, "text_sink": 0, "text_window": 0},
                     retrieval="rekv", topk=64),
    ),
}

DEFAULT_METHOD = "rekv"  # the server's and `ask-file`'s method when none is named

_MERGED = ("retention_options", "reduction_options", "retrieval_options", "budget_bytes")  # options add to a preset's dicts


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
        name = (options or {}).get("retrieval", base.retrieval)
        options = fold_flat(dict(options or {}), name)
        fields = {**base.model_dump(), **options}
        carried = {merged: getattr(base, merged) for merged in _MERGED}
        if name != base.retrieval and name in RETRIEVERS:  # another policy: the preset's options it takes
            takes = RETRIEVERS[name].policy.Options.model_fields
            carried["retrieval_options"] = {k: v for k, v in base.retrieval_options.items() if k in takes}
            fields["retrieval_options"] = options.get("retrieval_options", carried["retrieval_options"])
        for merged in _MERGED:
            if isinstance(options.get(merged), dict):
                fields[merged] = {**carried[merged], **options[merged]}
        config = MethodConfig.model_validate(fields)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise MethodError("invalid_options", f"invalid option {where}: {first['msg']}") from None
    try:
        # e.g. an external encoder must be configured
        RETRIEVERS[config.retrieval].check(retrieval_options(config.retrieval, config.retrieval_options))
    except RetrieverUnavailable as e:
        raise MethodError(e.code, str(e)) from None
    return config


def describe() -> list[dict]:
    return [
        {"name": n, "default": n == DEFAULT_METHOD, "aliases": sorted(a for a, p in ALIASES.items() if p == n),
         "description": d, "policies": c.model_dump()}
        for n, (d, c) in PRESETS.items()
    ]
