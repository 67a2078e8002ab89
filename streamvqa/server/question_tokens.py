"""Question length in the model's tokens: what a question costs is its prefill, not its characters.

2,000 emoji pass a character limit but are about 6,000 SmolLM2 tokens (tens of seconds of
prefill under the model lock). The server therefore also limits questions in tokens, counted
with the model's own tokenizer (the text alone, without the chat template around it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Counter = Callable[[str], int]


def utf8_bytes(text: str) -> int:
    """Upper bound on byte-level BPE tokens (every token covers at least one byte)."""
    return len(text.encode("utf-8", "surrogatepass"))


def _tokenizer_counter(tokenizer: Any) -> Counter:
    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count


def _load_tokenizer(model: str) -> Any:
    """The tokenizer alone, for a server whose model lives in worker processes (multi)."""
    from transformers import AutoTokenizer

    from streamvqa.models.loading import ensure_smollm2, tiny_dir

    if model == "default":
        path: Any = ensure_smollm2()
    elif model.startswith("tiny:"):
        path = tiny_dir(model.split(":", 1)[1])
    else:
        path = model
    return AutoTokenizer.from_pretrained(str(path))


def question_counter(tokenizer: Any | None, model: str, multi: bool = False) -> Counter:
    """Token counter for the model: the engine's own tokenizer (`Engine.tokenizer()`, embedded),
    else the tokenizer loaded from ``model`` (``multi``: the model is in worker processes). Falls
    back to UTF-8 bytes, an upper bound for byte-level BPE, when there is none (an engine
    double, an unreadable model directory)."""
    if tokenizer is None and multi:
        try:
            tokenizer = _load_tokenizer(model)
        except Exception as e:  # the limit still holds, counted conservatively
            log.warning("no tokenizer for %s (%s): question tokens counted as UTF-8 bytes", model, e)
    if tokenizer is None or not callable(tokenizer):
        return utf8_bytes
    return _tokenizer_counter(tokenizer)
