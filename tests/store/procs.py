"""Entry points run in child processes (multiprocessing spawn) by the store tests."""

from __future__ import annotations

import time

from streamvqa.store.config import TieredStoreConfig
from streamvqa.store.tiered import TieredStore
from tests.store.helpers import make_block


def durable_writer(config_json: str, conn, n_blocks: int) -> None:
    """Put blocks and report each acknowledged index; then wait to be killed."""
    store = TieredStore(TieredStoreConfig.model_validate_json(config_json))
    for i in range(n_blocks):
        store.put(make_block(i, "live"))
        conn.send(i)
    conn.send("done")
    time.sleep(600)
