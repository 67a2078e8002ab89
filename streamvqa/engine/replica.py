"""A stream session rebuilt from the block store, for a process that did not encode the stream.

Two users:
- the **answer worker** keeps a read-only answering view per stream and refreshes it before
  each question (stages 7-9 run on the stored blocks; no frame ever reaches it);
- an **encoder that restarted** resumes a stream after its last acknowledged block.

What a `StreamSession` needs besides the store is derived state, and all of it can be rebuilt:
- the sink: the prompt prefix, recomputed by `StreamSession.__init__` (same model, same tokens);
- the hot window: the longest suffix of blocks whose tokens fit `n_local` (at least one) —
  exactly what `HotWindow.push` keeps — laid out contiguously after the sink
  (`HotWindow.replace`), as the window does itself once units have left it;
- the position counter: the last block's `pos_end`; the next block index: last index + 1.

The session is changed only through `StreamSession.restore`, which keeps the window's layout
and the counters consistent.
"""

from __future__ import annotations

from streamvqa.engine.session import StreamSession
from streamvqa.store.block import Block

FETCH = 8  # blocks leased per round trip while walking back from the newest


def sync(session: StreamSession) -> int:
    """Bring `session`'s window, position counter and block count up to the store; returns the
    number of blocks the store holds for the stream. Call with the engine lock held.

    Window blocks already fetched by the previous call are reused (blocks are immutable once
    acknowledged), so a refresh leases only the blocks stored since."""
    store = session.store
    idx = store.index(session.stream_id)
    if not idx.indices:
        session.restore([], 0)
        return 0
    last = idx.indices[-1]
    window = session.window
    if session.next_index == last + 1 and window.blocks and window.blocks[-1].index == last:
        return len(idx.indices)  # nothing new
    times = dict(zip(idx.indices, idx.times, strict=True))
    # reuse only blocks the store still describes the same way (a store that lost a stream and
    # saw it re-encoded from 0 must not be answered from stale copies)
    have = {b.index: b for b in window.blocks if tuple(times.get(b.index, ())) == (b.t_start, b.t_end)}
    n_local = session.config.n_local
    chosen: list[Block] = []
    tokens = 0
    todo = list(reversed(idx.indices))
    done = False
    while todo and not done:
        batch, todo = todo[:FETCH], todo[FETCH:]
        missing = [i for i in batch if i not in have]
        fetched = {b.index: b for b in store.get_many(session.stream_id, missing)} if missing else {}
        for i in batch:
            b = have.get(i) or fetched[i]
            if chosen and n_local is not None and tokens + b.n_tokens > n_local:
                done = True
                break
            chosen.append(b)
            tokens += b.n_tokens
    chosen.reverse()
    session.restore(chosen, last + 1)
    return len(idx.indices)
