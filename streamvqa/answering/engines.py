"""Which answer engine an Engine uses (`EngineConfig.answer_engine`, `--answer-engine`)."""

from __future__ import annotations

from streamvqa.models.base import ModelAdapter

ANSWER_ENGINES = ("transformers", "vllm")


def make_answer_engine(name: str, adapter: ModelAdapter, options: dict | None = None):
    """None for `transformers` (sessions decode with the engine's own model), else the engine."""
    if name == "transformers":
        return None
    if name == "vllm":
        from streamvqa.answering.vllm_engine import VLLMAnswerEngine
        from streamvqa.answering.vllm_process import VLLMOptions

        return VLLMAnswerEngine(adapter, VLLMOptions(**(options or {})))
    raise ValueError(f"unknown answer engine {name!r}; known: {', '.join(ANSWER_ENGINES)}")
