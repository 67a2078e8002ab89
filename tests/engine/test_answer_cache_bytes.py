"""The answer cache a stream keeps for a follow-up question is KV memory the stream holds: its
bytes are reported (`kv_bytes["answer"]`) and bounded by what retrieval may choose (topk blocks,
and the retained memory's token budget), however long the stream runs. Before, it was invisible:
the soak benchmark counted its growth as RSS minus KV (docs/benchmarks.md, "Soak")."""

import pytest
import torch

from streamvqa.engine import Engine
from streamvqa.engine.window import RESERVE_TOKENS, cache_bytes
from streamvqa.models.base import piece_len
from tests.engine.conftest import get_adapter, make_frames

TOPK, MEMORY = 3, 96
OPTIONS = {"rekv": {"n_local": 64, "topk": TOPK}, "hybrid": {"n_local": 64, "topk": TOPK, "memory_tokens": MEMORY}}
QUESTION, MAX_TOKENS = "What is happening?", 3


@pytest.mark.parametrize("method", list(OPTIONS))
def test_answer_cache_is_counted_and_bounded(method: str) -> None:
    torch.set_num_threads(1)
    adapter = get_adapter("tiny:smolvlm")
    session = Engine(adapter=adapter).open_stream("s", method=method, options=OPTIONS[method])
    block_tokens = 0
    for k, (img, t) in enumerate(make_frames(40, seed=1, size=32), 1):
        session.push_frame(img, t)
        block_tokens = max([block_tokens, *(b.n_tokens for b in session.window.blocks)])
        if k % 4 == 0:
            session.answer(QUESTION, max_tokens=MAX_TOKENS)
            kv = session.stats().kv_bytes
            cache = session.answer_cache.cache
            assert kv["answer"] == cache_bytes(cache) > 0
            # sink + at most topk blocks (+ the retained memory), the question and answer, spare room
            bound = (session.window.sink.n_tokens + TOPK * block_tokens + (MEMORY if method == "hybrid" else 0)
                     + piece_len(adapter.question_piece(QUESTION)) + MAX_TOKENS + RESERVE_TOKENS)
            assert cache.layers[0].capacity <= bound


def test_an_answer_in_flight_counts_its_cache() -> None:
    """While an answer runs its cache is not the kept one (a follow-up may not reuse it yet) but
    is memory all the same: a memory sample taken meanwhile counts it."""
    torch.set_num_threads(1)
    session = Engine(adapter=get_adapter("tiny:smolvlm")).open_stream("s", method="rekv", options=OPTIONS["rekv"])
    for img, t in make_frames(8, seed=2, size=32):
        session.push_frame(img, t)
    it = session.answer_events(QUESTION, max_tokens=MAX_TOKENS)
    next(it)  # the first token: the answer holds its cache
    assert session.answer_cache is None and session.stats().kv_bytes["answer"] > 0
    list(it)
    assert session.stats().kv_bytes["answer"] == cache_bytes(session.answer_cache.cache)
