"""The per-stream M-RoPE tracker vs the model's own `get_rope_index` on full sequences."""

from __future__ import annotations

import pytest
import torch

from tests.models.conftest import FAMILIES, make_frames, stream_pieces


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
@pytest.mark.parametrize("unit_frames", [1, 2, 3, 4])
@pytest.mark.parametrize("second_per_grid", [1.0, 0.5, 1.5])
def test_tracker_equals_get_rope_index(adapters, family, unit_frames, second_per_grid):
    a = adapters(family)
    a.second_per_grid = second_per_grid
    try:
        frames = make_frames(3 * unit_frames, seed=4)
        pieces = stream_pieces(a, frames, "Where is it?", unit_frames)
        tr = a.new_positions()
        ours = torch.cat([tr.place(p) for p in pieces], dim=1)
        ref = a.reference_inputs(frames, "Where is it?", unit_frames=unit_frames)
        kw = {"second_per_grid_ts": ref["second_per_grid_ts"]} if "second_per_grid_ts" in ref else {}
        theirs, deltas = a.model.model.get_rope_index(
            ref["input_ids"],
            mm_token_type_ids=ref["mm_token_type_ids"],
            video_grid_thw=ref["video_grid_thw"],
            attention_mask=ref["attention_mask"],
            **kw,
        )
        assert torch.equal(ours, theirs[:, 0])
        assert tr.next == int(theirs.max()) + 1
    finally:
        a.second_per_grid = 1.0


@pytest.mark.parametrize("unit_frames", [1, 2, 3, 5])
def test_qwen3_tracker_equals_get_rope_index(adapters, unit_frames):
    """Qwen3-VL: one block per temporal patch behind its timestamp, as get_rope_index splits grids."""
    a = adapters("qwen3_vl")
    frames = make_frames(3 * unit_frames, seed=4)
    pieces = stream_pieces(a, frames, "Where is it?", unit_frames)
    tr = a.new_positions()
    ours = torch.cat([tr.place(p) for p in pieces], dim=1)
    ref = a.reference_inputs(frames, "Where is it?", unit_frames=unit_frames)
    theirs, _ = a.model.model.get_rope_index(
        ref["input_ids"],
        mm_token_type_ids=ref["mm_token_type_ids"],
        video_grid_thw=ref["video_grid_thw"],
        attention_mask=ref["attention_mask"],
    )
    assert torch.equal(ours, theirs[:, 0])
    assert tr.next == int(theirs.max()) + 1


# Qwen3-VL writes its processor's "<12.5 seconds>", SmolVLM2 / Idefics3 its "Frame from 123:45:":
# their counts grow with the time's digits.
@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in ("qwen3_vl", "smolvlm", "idefics3")])
def test_unit_token_count_fixed(adapters, family):
    """Every unit has the same token count whatever its timestamp (digits tokenize singly)."""
    a = adapters(family)
    frames = make_frames(1, seed=5)
    counts = {sum(s.n for s in a.unit_piece([frames[0][0]], t)) for t in (0.0, 9.0, 65.5, 5025.0, 86399.0)}
    assert counts == {a.unit_tokens(1)}
