"""The registry: every retrieval name builds from a method config; "none" answers from the
compact cache (the window) without a query pass."""

import pytest
import torch

from streamvqa.policies.presets import MethodConfig, resolve
from streamvqa.policies.retrieval import RETRIEVERS, NoRetrieval, RetrievalContext, Retriever


def test_every_registered_policy_builds_from_a_method_config():
    for name in RETRIEVERS:
        if name == "rekv-external":
            continue  # needs an encoder directory: tests/policies/test_retrieval_external.py
        retriever = MethodConfig(retrieval=name).retriever()
        assert isinstance(retriever, Retriever), name
        assert resolve("rekv", {"retrieval": name}).retrieval == name


def test_no_retrieval_uses_the_compact_cache_and_skips_the_query_pass():
    r = MethodConfig(retrieval="none").retriever()
    assert isinstance(r, NoRetrieval) and not r.needs_query(100)
    ctx = RetrievalContext(torch.zeros(2, 4), torch.zeros(5, 2, 1, 4), [0, 1, 2, 3, 4], window_ids=[3, 4])
    assert r.select(ctx).per_layer == [[3, 4], [3, 4]]


@pytest.mark.parametrize("name", ["streamkv", "livevlm", "streamingtom", "rlivs", "none"])
def test_each_policy_answers_through_a_session(name):
    from streamvqa.engine import Engine
    from tests.engine.conftest import get_adapter, make_frames

    session = Engine(adapter=get_adapter("tiny:smolvlm")).open_stream(
        "s", method="rekv", options={"retrieval": name, "n_local": 30, "topk": 2, "local_blocks": 1,
                                     "page_ratio": 0.2, "retrieve_tokens": 40})
    for image, t in make_frames(8):
        session.push_frame(image, t)
    answer = session.answer("What happened?", max_tokens=2)
    used = {i for row in answer.blocks_per_layer for i in row}
    assert used and used <= set(range(8)) and answer.evidence
    if name in ("none", "rlivs"):
        assert used == set(session.window.block_ids)
    else:
        assert 7 in used or name == "streamingtom"  # recent / short-term memory always in
