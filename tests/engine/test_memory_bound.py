"""Memory bound (DESIGN invariant 4): a long synthetic stream never takes a tier over its
per-stream byte budget, for every preset. Frames are cheap stand-ins (a bank of visual token
embeddings of the tiny model, varied per frame) so thousands of them run in seconds; the
language model, the cache and every policy are the real ones."""

import numpy as np
import pytest
import torch

from streamvqa.engine import Engine
from streamvqa.models.base import Segment
from streamvqa.policies.presets import PRESETS
from tests.engine.conftest import get_adapter, make_frames

FRAMES = 1500
# device: room for the sink (the published SmolVLM2 chat, ~50 tokens), a unit and a probe
BUDGETS = {"device": 128 << 10, "memory": 48 << 10, "store": 256 << 10}
# per preset: windows and token budgets scaled to the tiny model; lossy extras kept cheap
OPTIONS = {
    "rlivs": {"retention_options": {"caption_tokens": 2}, "unit_frames": 8},
    "streamkv": {"min_segment": 2, "max_segment": 8, "segment_theta": 0.9999},
    "streamingvlm": {"retention_options": {"vision_window_s": 20, "text_sink": 16, "text_window": 16}},
    "streamingtom": {"reduction_options": {"tokens": 8}},
    "livevlm": {"retention_options": {"short_term": 16}},
}
METHODS = [m for m in PRESETS if m != "rekv-external"]  # needs an external encoder directory


@pytest.fixture
def cheap_frames(monkeypatch):
    """The tiny SmolVLM with `unit_piece` served from a bank of real visual embeddings."""
    adapter = get_adapter("tiny:smolvlm")
    bank = [adapter.unit_piece([img], 0.0) for img, _ in make_frames(8, seed=3)]

    def unit_piece(frames, t):
        out = []
        for f in frames:
            i = int(f[0, 0, 0])
            noise = torch.Generator().manual_seed(i)
            for seg in bank[i % len(bank)]:
                if seg.embeds is None:
                    out.append(seg)
                else:
                    out.append(Segment(embeds=seg.embeds + 0.05 * torch.randn(seg.embeds.shape, generator=noise)))
        return out

    monkeypatch.setattr(adapter, "unit_piece", unit_piece)
    return adapter


def frame(i: int) -> np.ndarray:
    img = np.zeros((8, 8, 3), dtype=np.uint8)
    img[0, 0, 0] = i % 256
    return img


@pytest.mark.parametrize("method", METHODS)
def test_long_stream_never_exceeds_any_budget(cheap_frames, method):
    torch.set_num_threads(1)
    session = Engine(adapter=cheap_frames).open_stream(
        "s", method=method, options={"budget_bytes": BUDGETS, **OPTIONS.get(method, {})})
    for i in range(FRAMES):
        session.push_frame(frame((i * 7) // 5), float(i))
        if i % 250 == 0:
            stats = session.stats()
            assert stats.kv_bytes["device"] <= BUDGETS["device"]
            assert stats.kv_bytes.get("memory", 0) <= BUDGETS["memory"]
            assert sum(v for k, v in stats.kv_bytes.items() if k not in ("device", "memory")) <= BUDGETS["store"]
    stats = session.stats()
    assert stats.frames_received == FRAMES
    for tier, peak in stats.kv_peak_bytes.items():  # the highest the encoder ever took, per tier
        assert peak <= BUDGETS[tier], (tier, peak)
    assert stats.kv_peak_bytes["device"] > BUDGETS["device"] // 4  # the budget was actually in play
    answer = session.answer("What happened?", max_tokens=2)
    if session.retainer is not None:  # answered from the retained memory
        assert answer.evidence
        assert max(u.t_end for u in session.retainer.memory.units.values()) >= FRAMES - 32  # the recent past
    elif session.stores_blocks:  # the store budget was spent long ago: later units were not written (docs/methods.md)
        assert stats.units_dropped > 0
    else:  # sliding-window never reads a stored block back: it stores none, so none is dropped
        assert stats.kv_blocks["host"] == 0 and stats.units_dropped == 0


@pytest.mark.parametrize("method", ["streamkv", "streammem", "rlivs"])
def test_room_for_the_policys_probe_is_kept_from_the_first_unit(cheap_frames, method):
    """The text a policy runs after the stream (StreamKV's guidance, StreamMem's proxy, rLiVS's
    caption prompt and tokens) is reserved in the device budget before the first probe runs, so
    the first probe cannot take the encoder cache past its budget."""
    session = Engine(adapter=cheap_frames).open_stream(
        "s", method=method, options={"budget_bytes": BUDGETS, **OPTIONS.get(method, {})})
    text, generated = session.retainer.policy.scratch()
    assert session.extra_tokens == cheap_frames.text_segment(text).n + generated > 0
    for i in range(40):
        session.push_frame(frame(i), float(i))
    assert session.stats().kv_peak_bytes["device"] <= BUDGETS["device"]
