"""StreamingTOM group retrieval: cosine top groups within a token budget, per layer, time order;
only the selected groups are fetched (and so dequantized)."""

import torch

from streamvqa.engine import Engine
from streamvqa.policies.retrieval import GroupRetriever, RetrievalContext
from streamvqa.store.base import MemoryStore
from streamvqa.store.block import Block
from tests.engine.conftest import get_adapter, make_frames


def group(index: int, tokens: int = 50) -> Block:
    z = torch.zeros(1, 1, tokens, 1)
    return Block("s", index, 0.0, 0.0, z, z, torch.zeros(1, tokens, dtype=torch.long), 0, tokens, z[:, :, 0])


def test_cosine_finds_the_planted_group_that_a_large_norm_group_would_hide_from_a_dot_product():
    torch.manual_seed(0)
    layers, d = 3, 8
    query = torch.randn(layers, d)
    rep = torch.randn(12, layers, 1, d)
    rep[5, :, 0] = query * 0.5  # same direction as the question, small norm
    rep[7, :, 0] = (query + torch.randn(layers, d)) * 100  # loosely aligned, huge norm
    r = GroupRetriever(retrieve_tokens=50)  # one group of 50 tokens
    for i in range(12):
        r.observe(group(i))
    chosen = r.select(RetrievalContext(query, rep, list(range(12)), [11]))
    assert chosen.per_layer == [[5]] * layers
    dot = (rep[:, :, 0] * query).sum(-1).argmax(0)  # what an unnormalised score would pick
    assert (dot == 7).all()


def test_the_token_budget_buys_whole_groups_in_time_order():
    r = GroupRetriever(retrieve_tokens=175)
    for i in range(10):
        r.observe(group(i, tokens=50))
    assert r.groups(list(range(10))) == 3  # floor(175 / 50)
    torch.manual_seed(1)
    query = torch.randn(2, 4)
    chosen = r.select(RetrievalContext(query, torch.randn(10, 2, 1, 4), list(range(10)), []))
    assert all(len(row) == 3 and row == sorted(row) for row in chosen.per_layer)


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.fetched: list[int] = []

    def get_many(self, stream_id, indices):
        self.fetched += list(indices)
        return super().get_many(stream_id, indices)


def test_a_session_fetches_only_the_selected_groups():
    adapter = get_adapter("tiny:smolvlm")
    store = CountingStore()
    session = Engine(adapter=adapter, store=store).open_stream(
        "s", method="rekv", options={"retrieval": "streamingtom", "n_local": 30, "retrieve_tokens": 1})
    for image, t in make_frames(8):
        session.push_frame(image, t)
    answer = session.answer("What happened?", max_tokens=2)
    wanted = sorted({i for row in answer.blocks_per_layer for i in row})
    assert answer.retrieved_blocks == 1 and len(wanted) <= adapter.n_layers
    assert sorted(store.fetched) == wanted  # nothing else left the store
