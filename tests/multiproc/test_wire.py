"""A question's events on the worker wire (`workers/multi/wire.py`): the one conversion each
way, lossless for every field of `Answer` but the per-layer block ids."""

from __future__ import annotations

import dataclasses

from streamvqa.engine.types import Answer, TokenEvent
from streamvqa.proto import ipc
from streamvqa.workers.multi.wire import from_wire, to_wire


def _answer() -> Answer:
    """Every field away from its default, so a field the wire drops fails the round trip."""
    return Answer(
        text="a red car", token_ids=[5, 6, 7], evidence=[(0.0, 2.0), (4.0, 6.0)],
        timings={"queue_s": 0.1, "total_s": 0.5}, finish_reason="stop", tiers={"host": 2, "unavailable": 1},
        blocks_per_layer=[[0, 2], [2]], evidence_scores=[{"t_start": 0.0, "t_end": 2.0, "layers": 1.0, "score": 1.5}],
        retrieved_blocks=2, reused_cache=True, degraded=["redis"],
    )


def test_answer_fields_and_the_wire_stay_in_step() -> None:
    fields = {f.name for f in dataclasses.fields(Answer)}
    assert set(ipc.AnswerMsg.model_fields) == fields - {"blocks_per_layer"}


def test_answer_round_trip() -> None:
    answer = _answer()
    msg = to_wire(answer)
    assert isinstance(msg, ipc.AnswerMsg)
    back = from_wire(ipc.AnswerMsg.model_validate_json(msg.model_dump_json()))  # as it crosses the socket
    assert back == dataclasses.replace(answer, blocks_per_layer=[])
    assert back.evidence == [(0.0, 2.0), (4.0, 6.0)] and back.degraded == ["redis"]


def test_token_round_trip() -> None:
    ev = TokenEvent(" red", 42, 3)
    msg = to_wire(ev)
    assert msg == ipc.TokenMsg(text=" red", token_id=42, index=3)
    assert from_wire(msg) == ev
