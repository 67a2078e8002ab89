"""Batched encoding across streams (issue 19): a stream's memory is the same whether its frames
were encoded alone or in batches with other streams' (every family, every kind of preset), each
stream keeps its order under shuffled arrival, and questions are answered while 8 streams encode."""

from __future__ import annotations

import random
import threading
import time

import pytest
import torch

from streamvqa.engine import Engine, EngineConfig
from tests.engine.conftest import get_adapter, make_frames

N_STREAMS = 3


def _memory(session) -> dict:
    """Everything a stream's encoding leaves behind: stored blocks, retained memory, the
    encoder's cache, captions."""
    idx = session.store.index(session.stream_id)
    blocks = session.store.get_many(session.stream_id, idx.indices) if idx.indices else list(session.window.blocks)
    memory = session.retainer.memory.view() if session.retainer is not None else []
    cache = [(layer.keys, layer.values) for layer in session.window.cache.layers]
    return {"blocks": blocks, "memory": memory, "cache": cache, "captions": [c.text for c in session.captions],
            "frames_encoded": session.stats().frames_encoded}


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> None:
    """fp32 round-off relative to the tensor's scale: a larger matrix product may sum in another
    order. Tiny models agree to ~1e-6 (often bit for bit); through SmolLM2's 30 layers with
    StreamingTOM's token merging the last layers' values reach ~3e-5 (as the exactness tests
    allow ~4e-6 on logits). A stream seeing another's tokens would differ by O(1)."""
    assert a.shape == b.shape
    if a.numel():
        scale = max(a.float().abs().max().item(), 1e-6)
        assert (a.float() - b.float()).abs().max().item() <= tol * scale


def _close_codes(a: torch.Tensor, b: torch.Tensor) -> None:
    """A retained memory may be stored in 4-bit groups (StreamingTOM's OQM): round-off can move
    a value across a rounding boundary, one code step ((max - min) / 15 of its group) at most,
    and rarely. Unquantized memories meet `_close`'s bound."""
    assert a.shape == b.shape
    if not a.numel():
        return
    scale = max(a.float().abs().max().item(), 1e-6)
    diff = (a.float() - b.float()).abs()
    off = diff > 1e-4 * scale
    assert off.float().mean().item() < 0.01
    assert diff.max().item() <= 2 * scale / 15 * 1.01


def assert_same_memory(alone: dict, batched: dict) -> None:
    assert batched["frames_encoded"] == alone["frames_encoded"]
    assert batched["captions"] == alone["captions"]
    assert [b.index for b in batched["blocks"]] == [b.index for b in alone["blocks"]]
    for x, y in zip(alone["blocks"], batched["blocks"], strict=True):
        assert (x.t_start, x.t_end, x.pos_start, x.pos_end) == (y.t_start, y.t_end, y.pos_start, y.pos_end)
        assert torch.equal(x.positions, y.positions)
        _close(x.keys, y.keys)
        _close(x.values, y.values)
    for x, y in zip(alone["memory"], batched["memory"], strict=True):
        assert torch.equal(x.positions, y.positions) and torch.equal(x.unit, y.unit)
        _close_codes(x.keys, y.keys)
        _close_codes(x.values, y.values)
    for (k1, v1), (k2, v2) in zip(alone["cache"], batched["cache"], strict=True):
        _close(k1, k2)
        _close(v1, v2)


def encode_alone(adapter, method: str, options: dict | None, streams: list[list]) -> list[dict]:
    engine = Engine(adapter=adapter)
    out = []
    for k, frames in enumerate(streams):
        s = engine.open_stream(f"s{k}", method=method, options=options)
        for image, t in frames:
            s.push_frame(image, t)
        s.flush()
        out.append(_memory(s))
    return out


def encode_batched(adapter, method: str, options: dict | None, streams: list[list], shuffle: int | None = None):
    """Each stream's frames from its own thread through the engine's scheduler. The model lock is
    held until every stream is admitted and the batch wait is long: the first batches hold every
    stream, whatever the threads' timing (the batch must not depend on luck to be tested)."""
    engine = Engine(EngineConfig(encode={"max_batch": len(streams), "wait_s": 30.0}), adapter=adapter)
    sessions = [engine.open_stream(f"s{k}", method=method, options=options) for k in range(len(streams))]
    rng = random.Random(shuffle)

    def feed(session, frames):
        for image, t in frames:
            if shuffle is not None:
                time.sleep(rng.random() * 0.02)  # arrival shuffled across streams
            assert engine.scheduler.encode(session, image, t)

    threads = [threading.Thread(target=feed, args=(s, f)) for s, f in zip(sessions, streams, strict=True)]
    with engine.lock:
        for t in threads:
            t.start()
        if shuffle is None:
            for _ in range(2000):  # bounded: every stream admitted and waiting for the model
                if engine.scheduler._active == len(streams):
                    break
                time.sleep(0.005)
    for t in threads:
        t.join()
    for s in sessions:
        s.flush()
    return [_memory(s) for s in sessions], engine.scheduler.stats


FAMILIES = ["tiny:smolvlm", "tiny:idefics3", "tiny:qwen2_vl", "tiny:qwen2_5_vl", "tiny:qwen3_vl",
            "tiny:llava_onevision", pytest.param("default", marks=pytest.mark.slow)]
# one preset of each kind: window (rekv), retained memory encoded on the window (infinipot-v),
# encoded on the retained memory (streamingvlm), frame-mode with reduction (streamingtom)
KINDS = [("rekv", None), ("infinipot-v", None), ("streamingvlm", None), ("streamingtom", None)]


@pytest.mark.parametrize("method,options", KINDS, ids=[k for k, _ in KINDS])
@pytest.mark.parametrize("family", FAMILIES)
def test_batched_equals_alone(family, method, options):
    adapter = get_adapter(family)
    streams = [make_frames(3, seed=10 + k) for k in range(N_STREAMS)]
    alone = encode_alone(adapter, method, options, streams)
    batched, stats = encode_batched(adapter, method, options, streams)
    assert max(stats.batches) == N_STREAMS  # every stream's unit in one forward
    assert max(stats.vision_batches) == N_STREAMS  # and through the vision tower together
    for a, b in zip(alone, batched, strict=True):
        assert_same_memory(a, b)


# the other kinds on the tiny SmolVLM: semantic segments + summary units (streamkv), a redundancy
# filter (streammem), model-written captions generated token by token in batches (rlivs),
# demotion with compaction (hybrid-kv) and kept inputs (hybrid)
OTHER = [("streamkv", None), ("streammem", None), ("rlivs", {"unit_frames": 2}), ("hybrid", None), ("hybrid-kv", None),
         ("resv", None), ("livevlm", None), ("full", None), ("sliding-window", None)]


@pytest.mark.parametrize("method,options", OTHER, ids=[k for k, _ in OTHER])
def test_batched_equals_alone_every_preset(method, options):
    adapter = get_adapter("tiny:smolvlm")
    streams = [make_frames(4, seed=20 + k) for k in range(N_STREAMS)]
    alone = encode_alone(adapter, method, options, streams)
    batched, stats = encode_batched(adapter, method, options, streams)
    assert max(stats.vision_batches) == N_STREAMS
    for a, b in zip(alone, batched, strict=True):
        assert_same_memory(a, b)


def test_order_per_stream_under_shuffled_arrival():
    adapter = get_adapter("tiny:smolvlm")
    streams = [make_frames(6, seed=30 + k) for k in range(4)]
    alone = encode_alone(adapter, "rekv", None, streams)
    batched, _ = encode_batched(adapter, "rekv", None, streams, shuffle=7)
    for a, b in zip(alone, batched, strict=True):
        assert [x.t_start for x in b["blocks"]] == sorted(x.t_start for x in b["blocks"])
        assert_same_memory(a, b)


def test_questions_are_answered_while_eight_streams_encode():
    """A question does not wait for the encode backlog: it is answered while the 8 streams
    still have frames to encode (the FIFO model lock gives it the next turn)."""
    adapter = get_adapter("tiny:smolvlm")
    engine = Engine(EngineConfig(encode={"max_batch": 8}), adapter=adapter)
    sessions = [engine.open_stream(f"s{k}", method="rekv") for k in range(8)]
    n_frames = 40
    streams = [make_frames(n_frames, seed=40 + k) for k in range(8)]
    started = threading.Event()

    def feed(session, frames):
        for i, (image, t) in enumerate(frames):
            engine.scheduler.encode(session, image, t)
            if i == 2:
                started.set()

    threads = [threading.Thread(target=feed, args=(s, f)) for s, f in zip(sessions, streams, strict=True)]
    for t in threads:
        t.start()
    try:
        assert started.wait(120)
        answer = sessions[0].answer("What is shown?", max_tokens=4)
        encoded_then = engine.scheduler.stats.frames_encoded
    finally:
        for t in threads:
            t.join()
    assert answer.token_ids or answer.finish_reason == "stop"
    assert answer.evidence  # answered from the frames encoded so far
    assert encoded_then < 8 * n_frames  # ... while the streams were still encoding
    assert engine.scheduler.stats.frames_encoded == 8 * n_frames
    assert max(engine.scheduler.stats.batches) > 1
