"""Retrieval over every tier: blocks demoted to disk (or Redis) are found by the same index,
promoted on use, and the answer is exactly the one host RAM alone gives."""

from streamvqa.engine import Engine, EngineConfig
from tests.engine.conftest import get_adapter, make_frames


def test_answers_from_cold_tiers_equal_answers_from_host_ram(tmp_path):
    adapter = get_adapter("tiny:qwen2_vl")
    frames = make_frames(8)

    reference = Engine(adapter=adapter).open_stream("s", method="full")
    for image, t in frames:
        reference.push_frame(image, t)
    expected = reference.answer("What happened?", max_tokens=6)

    block_bytes = reference.store.get_many("s", [0])[0].nbytes
    store = {"tiers": [{"kind": "host", "budget_bytes": 3 * block_bytes}, {"kind": "disk", "path": str(tmp_path), "budget_bytes": 1 << 30}],
             "durable": True}
    engine = Engine(EngineConfig(model="tiny:qwen2_vl", store=store), adapter=adapter)
    session = engine.open_stream("s", method="full")
    for image, t in frames:
        session.push_frame(image, t)
        assert session.stats().kv_bytes.get("host", 0) <= 3 * block_bytes + 4096  # budget (+ headers)
    assert session.stats().kv_blocks.get("disk", 0) >= 5  # most units were demoted
    answer = session.answer("What happened?", max_tokens=6)
    assert answer.token_ids == expected.token_ids
    assert sum(answer.tiers.values()) == 8 and answer.tiers.get("disk", 0) >= 5  # served from where they were
    engine.close()
