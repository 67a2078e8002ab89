"""Answers recomputed from the units' LM inputs (`answer_from="inputs"`): the answer cache is
the sink and the chosen units prefilled afresh, so the answer is offline inference over exactly
the frames it names as evidence; input matching retrieves a moment that left the window."""

import pytest
import torch

from streamvqa.engine import Engine
from streamvqa.evals.common import normalise
from streamvqa.models.base import piece_len
from tests.engine.conftest import FAMILIES, get_adapter, make_frames, reference_tokens
from tests.engine.test_needle_rekv import CASES, first_needle

QUESTION = "What colour is the square?"


def pushed(adapter, method, options, n_frames=6):
    session = Engine(adapter=adapter).open_stream("s", method=method, options=options)
    frames = make_frames(n_frames)
    for image, t in frames:
        session.push_frame(image, t)
    return session, frames


@pytest.mark.parametrize("family", FAMILIES)
@torch.inference_mode()
def test_full_memory_recomputed_equals_offline_generate(family):
    adapter = get_adapter(family)
    session, frames = pushed(adapter, "full", {"answer_from": "inputs"}, n_frames=4)
    answer = session.answer(QUESTION, max_tokens=8)
    assert answer.token_ids == reference_tokens(adapter, frames, QUESTION, 8)
    assert answer.evidence == [(float(i), float(i)) for i in range(4)]
    assert answer.tiers == {"inputs": 4}


# M-RoPE families place a frame's temporal position by its time; offline inference over a
# subset of frames places them back to back, so only 1-D position families compare on a subset
@pytest.mark.parametrize("family", ["default", "tiny:smolvlm", "tiny:idefics3"])
@torch.inference_mode()
def test_retrieved_units_recomputed_equal_offline_generate_over_them(family):
    adapter = get_adapter(family)
    per_frame = piece_len(adapter.unit_piece([make_frames(1)[0][0]], 0.0))
    session, frames = pushed(adapter, "rekv", {"n_local": 2 * per_frame, "topk": 2, "answer_from": "inputs"})
    answer = session.answer(QUESTION, max_tokens=8)
    used = sorted({i for row in answer.blocks_per_layer for i in row})
    assert 2 <= len(used) < len(frames)  # a real subset: retrieval chose
    given = [frames[i] for i in used]
    assert answer.evidence == [(t, t) for _, t in given] or len(answer.evidence) < len(used)  # merged if adjacent
    assert answer.token_ids == reference_tokens(adapter, given, QUESTION, 8)
    again = session.answer(QUESTION, max_tokens=8)  # the follow-up reuses the recomputed cache
    assert again.reused_cache and again.token_ids == answer.token_ids


@torch.inference_mode()
def test_inputs_are_kept_small_and_counted():
    adapter = get_adapter("default")
    session, _ = pushed(adapter, "rekv", {"answer_from": "inputs"}, n_frames=6)
    kv = session.stats().kv_bytes
    stored = sum(v for k, v in kv.items() if k not in ("device", "answer", "window", "inputs"))
    assert 0 < kv["inputs"] * 10 < stored  # 12 tokens x 576 values against 30 layers of K and V
    assert not session.replicable  # the inputs live in this session only


@pytest.mark.parametrize("seed", list(CASES))
@torch.inference_mode()
def test_input_matching_answers_a_needle_that_left_the_window(default_adapter, seed):
    frames, questions, needle_end = first_needle(seed, CASES[seed])
    per_frame = next(n for image, _ in frames if (n := piece_len(default_adapter.unit_piece([image], 0.0))))
    engine = Engine(adapter=default_adapter)
    session = engine.open_stream("im", method="hybrid", options={
        "n_local": 4 * per_frame, "memory_tokens": per_frame, "topk": 1,  # the newest frame and one retrieved "retrieval": "input-match",
        "answer_from": "inputs", "demote": False})
    for image, t in frames:
        session.push_frame(image, t)
    assert min(session.retainer.memory.units[u].t_start for u in session.retainer.memory.units) > needle_end
    for q in questions:
        answer = session.answer(q["question"], max_tokens=4)
        (lo, hi), = q["evidence"]  # the moment came back from its inputs (a unit's time is its first frame's)
        assert any(lo <= t0 and t1 <= hi for t0, t1 in answer.evidence), (q["question"], answer.evidence)
        assert normalise(answer.text) == normalise(q["answer"]), (q["question"], answer.text)
        assert session.store.index("im").indices == []  # nothing demoted: the KV was never stored
    engine.close_stream("im")


@torch.inference_mode()
def test_kept_inputs_stay_within_the_store_budget_oldest_dropped_first():
    adapter = get_adapter("tiny:smolvlm")
    whole, _ = pushed(adapter, "rekv", {"answer_from": "inputs", "retrieval": "input-match"}, n_frames=8)
    per_unit = whole.inputs.nbytes() // 8
    budget = 3 * per_unit + per_unit // 2  # room for three units' inputs and no stored KV
    session, _ = pushed(adapter, "hybrid", {"budget_bytes": {"store": budget}, "memory_tokens": 10_000}, n_frames=8)
    assert list(session.inputs.units) == [5, 6, 7]  # the newest kept
    assert session.inputs.nbytes() <= budget and session.stats().kv_peak_bytes["store"] <= budget
    answer = session.answer(QUESTION, max_tokens=2)  # the memory's older units have no inputs left to read
    assert answer.tiers == {"inputs": 3} and answer.evidence == [(5.0, 5.0), (6.0, 6.0), (7.0, 7.0)] and answer.token_ids
