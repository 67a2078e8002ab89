"""Demote, don't delete: what retention drops stays indexed in a colder tier and retrieval brings
it back whole; budgets hold per tier."""

from streamvqa.engine import Engine, EngineConfig
from tests.engine.conftest import get_adapter, make_frames

QUESTION = "What happened?"


def test_compacted_units_come_back_whole_from_the_store(tmp_path):
    adapter = get_adapter("tiny:smolvlm")
    store = {"tiers": [{"kind": "host", "budget_bytes": 1 << 20},
                       {"kind": "disk", "path": str(tmp_path), "budget_bytes": 1 << 30}]}
    engine = Engine(EngineConfig(model="tiny:smolvlm", store=store), adapter=adapter)
    session = engine.open_stream("s", method="hybrid-kv", options={"memory_tokens": 40, "n_local": 40, "topk": 3,
                                                                "score_mass": None})
    for image, t in make_frames(12):
        session.push_frame(image, t)
    memory = session.retainer.memory
    assert max(memory.tokens) <= 40 and len(memory.whole_units()) < 12  # retention compacted
    assert sum(session.store.blocks_by_tier("s").values()) == 12  # every original still indexed
    block_bytes = session.store.get_many("s", [0])[0].nbytes  # readable from its tier
    answer = session.answer(QUESTION, max_tokens=2)
    from_store = sum(v for k, v in answer.tiers.items() if k != "memory")
    # per layer the top 3 demoted units come back whole (layers may differ: the union is served)
    assert 3 <= from_store <= 3 * adapter.n_layers
    in_memory = set(memory.units)
    for layer in answer.blocks_per_layer:
        assert in_memory <= set(layer) and len(set(layer) - in_memory) <= 3
    assert block_bytes > 0
    engine.close()


def test_without_demotion_nothing_is_written_to_the_store():
    session = Engine(adapter=get_adapter("tiny:smolvlm")).open_stream(
        "s", method="infinipot-v", options={"memory_tokens": 30})
    for image, t in make_frames(8):
        session.push_frame(image, t)
    assert sum(session.store.blocks_by_tier("s").values()) == 0
    assert session.answer(QUESTION, max_tokens=1).tiers == {"memory": len(session.retainer.memory.units)}


def test_a_demoted_unit_served_from_disk_when_host_ram_is_small(tmp_path):
    adapter = get_adapter("tiny:smolvlm")
    probe = Engine(adapter=adapter).open_stream("p", method="full")
    image, t = make_frames(1)[0]
    probe.push_frame(image, t)
    block_bytes = probe.store.get_many("p", [0])[0].nbytes
    store = {"tiers": [{"kind": "host", "budget_bytes": 2 * block_bytes + 4096},
                       {"kind": "disk", "path": str(tmp_path), "budget_bytes": 1 << 30}]}
    engine = Engine(EngineConfig(model="tiny:smolvlm", store=store), adapter=adapter)
    session = engine.open_stream("s", method="hybrid-kv", options={"memory_tokens": 20, "n_local": 40, "topk": 4,
                                                                "score_mass": None})
    for image, t in make_frames(10):
        session.push_frame(image, t)
    assert session.store.blocks_by_tier("s").get("disk", 0) >= 6
    answer = session.answer(QUESTION, max_tokens=1)
    assert answer.tiers.get("disk", 0) + answer.tiers.get("pending", 0) >= 1
    engine.close()
