"""Block keys: model fingerprint + stream + unit index.

Every key names the model that produced the block, so two models (or two layouts of one model)
never read each other's KV, even when they share a disk directory or a Redis server.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

_FINGERPRINT_RE = re.compile(r"^[A-Za-z0-9._-]{1,96}$")


def validate_fingerprint(fingerprint: str) -> str:
    """Fingerprints appear verbatim in file paths and Redis keys: keep them to a safe alphabet."""
    if not _FINGERPRINT_RE.match(fingerprint):
        raise ValueError(f"model fingerprint must match {_FINGERPRINT_RE.pattern}, got {fingerprint!r}")
    return fingerprint


def model_fingerprint(model_config: dict, weights_id: str, layout: str = "") -> str:
    """A short stable fingerprint of a model: its config, the weights it loaded and the KV layout.

    Engines may pass any string that changes whenever the KV a model writes would change; this
    helper is a convenient default (sha256 of canonical JSON, 16 hex digits).
    """
    blob = json.dumps(
        {"config": model_config, "weights": weights_id, "layout": layout}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def quote_stream(stream_id: str) -> str:
    """Reversible encoding of a stream id safe for file names and `:`-separated keys."""
    return quote(stream_id, safe="") if stream_id else "%"


def unquote_stream(text: str) -> str:
    return "" if text == "%" else unquote(text)


@dataclass(frozen=True, order=True)
class BlockKey:
    """Identity of one stored block."""

    fingerprint: str
    stream_id: str
    index: int

    def to_str(self, prefix: str = "streamvqa") -> str:
        """`{prefix}:{fingerprint}:{stream}:{index}` with the stream id percent-encoded."""
        return f"{prefix}:{self.fingerprint}:{quote_stream(self.stream_id)}:{self.index}"

    @classmethod
    def from_str(cls, text: str, prefix: str = "streamvqa") -> BlockKey:
        head = prefix + ":"
        if not text.startswith(head):
            raise ValueError(f"key {text!r} does not start with {head!r}")
        parts = text[len(head) :].split(":")
        if len(parts) != 3:
            raise ValueError(f"malformed block key {text!r}")
        fingerprint, stream, index = parts
        return cls(fingerprint, unquote_stream(stream), int(index))
