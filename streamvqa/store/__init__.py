"""KV block store: the `BlockStore` interface, the embedded `MemoryStore`, and the tiered store
(host RAM in shared memory → disk → Redis) with its block format. See docs/store.md.

Names are imported lazily, so `import streamvqa.store.block` stays as light as it was.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Block": "streamvqa.store.block",
    "BlockStore": "streamvqa.store.base",
    "MemoryStore": "streamvqa.store.base",
    "StreamIndex": "streamvqa.store.base",
    "TieredStore": "streamvqa.store.tiered",
    "TieredStoreConfig": "streamvqa.store.config",
    "HostTierConfig": "streamvqa.store.config",
    "DiskTierConfig": "streamvqa.store.config",
    "RedisTierConfig": "streamvqa.store.config",
    "WriteBehindConfig": "streamvqa.store.config",
    "SpillConfig": "streamvqa.store.config",
    "BlockKey": "streamvqa.store.keys",
    "model_fingerprint": "streamvqa.store.keys",
    "StoreError": "streamvqa.store.errors",
    "CorruptBlockError": "streamvqa.store.errors",
    "BlockNotFoundError": "streamvqa.store.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'streamvqa.store' has no attribute {name!r}")
