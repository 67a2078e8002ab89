"""An adopted stream's session rebuilt from the blocks its dead owner wrote to the shared Redis.

The survivor's store learned of the stream's blocks only if they were in Redis when it opened;
`TieredStore.index_stream` reads the stream's keys again (``{prefix}:{fingerprint}:{stream}:*``:
the same model fingerprint, so only KV this model wrote) into the store's index. `engine.replica.sync`
then sets the session's window, positions and next block index after the last stored block,
as an encoder restart of the multi topology does. What the store does not hold restarts empty:
a retained memory, semantic units, a retriever's own index (`retaining`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

log = logging.getLogger(__name__)


def index_stream(store: Any, stream_id: str) -> int:
    """Index the stream's blocks the store's durable tiers hold that it does not know yet (the
    dead owner wrote them); returns how many. Stores without durable tiers know nothing more."""
    reindex = getattr(store, "index_stream", None)
    return reindex(stream_id) if reindex is not None else 0


def retaining(session: Any) -> bool:
    """Whether the stream keeps state beyond its stored blocks, which adoption cannot restore."""
    from streamvqa.workers.multi.encoder import replicable

    return not replicable(session)


def prepare(engine: Any, created_at: float, report: dict[str, Any] | None = None) -> Any:
    """``StreamRegistry.create``'s ``prepare``: rebuild the session from the store and return
    where ingest resumes (stream seconds): after the last stored block, or where a real-time
    source is by now ("live": the frames between are lost), whichever is later. ``report`` gets
    ``blocks``, ``last_t`` and ``resume_t``."""

    def run(session: Any) -> float | None:
        from streamvqa.engine.replica import sync

        n_new = index_stream(session.store, session.stream_id)
        with engine.lock, torch.inference_mode():
            n = sync(session)
        if retaining(session):
            log.warning("stream %s: method %s keeps a retained memory that is not in the store; it "
                        "restarts empty after adoption", session.stream_id, session.method)
        idx = session.store.index(session.stream_id)
        last = float(idx.times[-1][1]) if idx.times else None
        live = max(0.0, time.time() - created_at)
        log.info("stream %s adopted: %d stored blocks (%d indexed now), last t=%s, live t=%.1f",
                 session.stream_id, n, n_new, last, live)
        resume = max(last or 0.0, live)
        if report is not None:
            report.update(blocks=n, last_t=last, resume_t=resume)
        return resume

    return run
