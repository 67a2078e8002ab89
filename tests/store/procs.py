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


def map_and_check(descriptors: list[dict], conn) -> None:
    """Reader process: map leased blocks zero-copy and compare them with the expected blocks."""
    from streamvqa.store.leases import map_block
    from tests.store.helpers import assert_same_block

    report = []
    for d in descriptors:
        try:
            with map_block(d) as mapped:
                assert_same_block(make_block(d["index"]), mapped.block)
                report.append((d["index"], "ok"))
        except Exception as e:  # report, the parent asserts
            report.append((d["index"], f"{type(e).__name__}: {e}"))
    conn.send(report)
