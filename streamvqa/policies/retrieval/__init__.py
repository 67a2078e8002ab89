"""Stage 7: question-time retrieval policies, one file per method, and the registry of names.

`RETRIEVERS` maps the `retrieval` name of a `MethodConfig` to a factory (and an optional check
run when a method is resolved, so a misconfigured policy is refused before a stream opens).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streamvqa.policies.retrieval.base import (
    AllBlocks,
    Caption,
    RetrievalContext,
    Retriever,
    RetrieverUnavailable,
    Selection,
    WindowOnly,
)
from streamvqa.policies.retrieval.livevlm import PaRRetriever
from streamvqa.policies.retrieval.none import NoRetrieval
from streamvqa.policies.retrieval.rekv import ReKVRetriever
from streamvqa.policies.retrieval.rekv_external import ReKVExternalRetriever, check_encoder
from streamvqa.policies.retrieval.rlivs import CaptionRetriever
from streamvqa.policies.retrieval.streamingtom import GroupRetriever
from streamvqa.policies.retrieval.streamkv import StreamKVRetriever


@dataclass(frozen=True)
class Entry:
    build: Callable[[Any], Retriever]  # MethodConfig -> Retriever
    check: Callable[[Any], None] = lambda config: None  # raises RetrieverUnavailable


RETRIEVERS: dict[str, Entry] = {
    "all": Entry(lambda c: AllBlocks()),
    "window": Entry(lambda c: WindowOnly()),
    "none": Entry(lambda c: NoRetrieval()),
    "rekv": Entry(lambda c: ReKVRetriever(c.topk, c.similarity, c.score_mass, c.min_blocks)),
    "rekv-external": Entry(
        lambda c: ReKVExternalRetriever(c.encoder_dir, c.topk, c.score_mass, c.min_blocks), check_encoder
    ),
    "streamkv": Entry(
        lambda c: StreamKVRetriever(c.topk or 64, c.size_temp, c.max_blocks, c.local_blocks, c.similarity)
    ),
    "livevlm": Entry(lambda c: PaRRetriever(c.page_size, c.page_ratio, c.similarity)),
    "streamingtom": Entry(lambda c: GroupRetriever(c.retrieve_tokens)),
    "rlivs": Entry(
        lambda c: CaptionRetriever(
            c.caption_tokens, c.mmr_lambda,
            ReKVRetriever(c.topk, c.similarity, c.score_mass, c.min_blocks) if c.caption_blocks else None,
        )
    ),
}


def build_retriever(config: Any) -> Retriever:
    """The retriever a MethodConfig names (validated: `retrieval` is a key of RETRIEVERS)."""
    return RETRIEVERS[config.retrieval].build(config)


__all__ = [
    "RETRIEVERS",
    "AllBlocks",
    "Caption",
    "CaptionRetriever",
    "Entry",
    "GroupRetriever",
    "NoRetrieval",
    "PaRRetriever",
    "ReKVExternalRetriever",
    "ReKVRetriever",
    "RetrievalContext",
    "Retriever",
    "RetrieverUnavailable",
    "Selection",
    "StreamKVRetriever",
    "WindowOnly",
    "build_retriever",
]
