"""KV block store: the `BlockStore` interface, the embedded `MemoryStore`, and the tiered store
(host RAM in shared memory → disk → Redis) with its block format. See docs/store.md."""

from streamvqa.store.base import BlockStore, MemoryStore, StreamIndex
from streamvqa.store.block import Block
from streamvqa.store.config import (
    DiskTierConfig,
    HostTierConfig,
    RedisTierConfig,
    TieredStoreConfig,
    WriteBehindConfig,
)
from streamvqa.store.errors import BlockNotFoundError, CorruptBlockError, StoreError
from streamvqa.store.keys import BlockKey, model_fingerprint
from streamvqa.store.tiered import TieredStore

__all__ = [
    "Block",
    "BlockKey",
    "BlockNotFoundError",
    "BlockStore",
    "CorruptBlockError",
    "DiskTierConfig",
    "HostTierConfig",
    "MemoryStore",
    "RedisTierConfig",
    "StoreError",
    "StreamIndex",
    "TieredStore",
    "TieredStoreConfig",
    "WriteBehindConfig",
    "model_fingerprint",
]
