"""Names of the stage-1/2/5 policies a MethodConfig may choose, their option checks, method aliases.

Each entry is "module:Class"; the class carries its pydantic `Options` (paper defaults, unknown
options refused), so a misconfigured stream is refused when its method is resolved.
"""

from __future__ import annotations

import importlib

RETENTIONS: dict[str, str | None] = {
    "none": None,
    "streamkv": "streamvqa.policies.streamkv:StreamKV",
    "infinipot-v": "streamvqa.policies.infinipot_v:InfiniPotV",
    "streammem": "streamvqa.policies.streammem:StreamMem",
    "livevlm": "streamvqa.policies.livevlm:VisionSinkBucketing",
    "streamingtom": "streamvqa.policies.streamingtom:OnlineQuantizedMemory",
    "streamingvlm": "streamvqa.policies.streamingvlm:StreamingVLM",
    "resv": "streamvqa.policies.resv:ReSV",
    "rlivs": "streamvqa.policies.rlivs:RLiVS",
}

# Other names a method preset is known by (the paper's name), accepted wherever a method name is.
ALIASES: dict[str, str] = {"v-rex": "resv", "vrex": "resv"}


def canonical(method: str) -> str:
    """The preset name for ``method``: an alias (any case) becomes its preset, others are kept."""
    return ALIASES.get(method.lower(), method)


# stage 1: how single frames are cut into units (`units`), and the redundant-frame filter
SEGMENTERS: dict[str, str] = {
    "fixed": "streamvqa.policies.units:Segmenter",
    "semantic": "streamvqa.policies.streamkv:SemanticSegments",
}
FRAME_FILTERS: dict[str, str] = {  # what a frame is compared by: its mean visual token, or every token
    "mean": "streamvqa.policies.streammem:RedundantFrames",
    "tokens": "streamvqa.policies.repeated_frames:RepeatedFrames",
}

REDUCTIONS: dict[str, str | None] = {
    "none": None,
    "ctr": "streamvqa.policies.streamingtom:CausalTemporalReduction",
}


def _load(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def retention_options(name: str, options: dict):
    path = RETENTIONS[name]
    if path is None:
        if options:
            raise ValueError("retention 'none' takes no retention_options")
        return None
    return _load(path).Options.model_validate(options)


def reduction_options(name: str, options: dict):
    path = REDUCTIONS[name]
    if path is None:
        if options:
            raise ValueError("reduction 'none' takes no reduction_options")
        return None
    return _load(path).Options.model_validate(options)


def build_retention(name: str, options: dict):
    path = RETENTIONS[name]
    return None if path is None else _load(path)(retention_options(name, options))


def build_reduction(name: str, options: dict):
    path = REDUCTIONS[name]
    return None if path is None else _load(path)(reduction_options(name, options))


def build_units(config, vision):
    """The unit builder of a MethodConfig: whole multi-frame pieces, or single frames when a
    policy looks at frames before the LLM (segmentation, frame filter, reduction)."""
    from streamvqa.policies.units import FixedUnits, FrameUnits

    frame_filter = None if config.frame_filter is None else \
        _load(FRAME_FILTERS[config.frame_filter_by])(config.frame_filter)
    if config.units == "fixed" and frame_filter is None and config.reduction == "none":
        return FixedUnits(vision, config.unit_frames)
    return FrameUnits(vision, _load(SEGMENTERS[config.units]).from_config(config), frame_filter)
