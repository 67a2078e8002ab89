"""Stage 7: question-time retrieval policies, one file per method, and the registry of names.

`RETRIEVERS` maps the `retrieval` name of a `MethodConfig` to its policy class, whose pydantic
`Options` (defaults, unknown names refused) validate the method's `retrieval_options`, and an
optional check run when a method is resolved, so a misconfigured policy is refused before a
stream opens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streamvqa.policies.retrieval.base import (
    AllBlocks,
    Caption,
    RetrievalContext,
    RetrievalOptions,
    Retriever,
    RetrieverUnavailable,
    Selection,
    WindowOnly,
)
from streamvqa.policies.retrieval.input_match import InputMatchRetriever
from streamvqa.policies.retrieval.livevlm import PaRRetriever
from streamvqa.policies.retrieval.none import NoRetrieval
from streamvqa.policies.retrieval.rekv import ReKVRetriever
from streamvqa.policies.retrieval.rekv_external import ReKVExternalRetriever, check_encoder
from streamvqa.policies.retrieval.rlivs import CaptionRetriever
from streamvqa.policies.retrieval.streamingtom import GroupRetriever
from streamvqa.policies.retrieval.streamkv import StreamKVRetriever


@dataclass(frozen=True)
class Entry:
    policy: type[Retriever]  # its `Options` validate the method's `retrieval_options`
    check: Callable[[Any], None] = lambda options: None  # raises RetrieverUnavailable


# Adding a retrieval policy: its file here (a Retriever subclass with its Options), one line below.
RETRIEVERS: dict[str, Entry] = {
    "all": Entry(AllBlocks),
    "window": Entry(WindowOnly),
    "none": Entry(NoRetrieval),
    "rekv": Entry(ReKVRetriever),
    "rekv-external": Entry(ReKVExternalRetriever, check_encoder),
    "streamkv": Entry(StreamKVRetriever),
    "livevlm": Entry(PaRRetriever),
    "streamingtom": Entry(GroupRetriever),
    "rlivs": Entry(CaptionRetriever),
    "input-match": Entry(InputMatchRetriever),
}

# option names a request may still give at the top level (before `retrieval_options` existed)
FLAT_OPTIONS: frozenset[str] = frozenset(f for e in RETRIEVERS.values() for f in e.policy.Options.model_fields)


def retrieval_options(name: str, options: dict) -> RetrievalOptions:
    """`options` validated by policy `name`'s Options (defaults filled, unknown names refused)."""
    return RETRIEVERS[name].policy.Options.model_validate(options)


def build_retriever(name: str, options: dict) -> Retriever:
    """The retriever called `name` (a key of RETRIEVERS) with its options."""
    return RETRIEVERS[name].policy.from_options(retrieval_options(name, options))


__all__ = [
    "FLAT_OPTIONS",
    "RETRIEVERS",
    "AllBlocks",
    "Caption",
    "CaptionRetriever",
    "Entry",
    "GroupRetriever",
    "InputMatchRetriever",
    "NoRetrieval",
    "PaRRetriever",
    "ReKVExternalRetriever",
    "ReKVRetriever",
    "RetrievalContext",
    "RetrievalOptions",
    "Retriever",
    "RetrieverUnavailable",
    "Selection",
    "StreamKVRetriever",
    "WindowOnly",
    "build_retriever",
    "retrieval_options",
]
