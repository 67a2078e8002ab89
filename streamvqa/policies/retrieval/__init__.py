"""Stage 7: question-time retrieval policies."""

from streamvqa.policies.retrieval.base import AllBlocks, Retriever, Selection, WindowOnly
from streamvqa.policies.retrieval.rekv import ReKVRetriever

__all__ = ["AllBlocks", "ReKVRetriever", "Retriever", "Selection", "WindowOnly"]
