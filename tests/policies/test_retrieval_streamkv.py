"""StreamKV retrieval: layer-adaptive sizes (two passes, clamped), recent blocks always taken,
summary units competing in the index."""

import torch

from streamvqa.policies.retrieval import RetrievalContext, StreamKVRetriever
from streamvqa.policies.retrieval.streamkv import adaptive_sizes
from streamvqa.store.block import Block


def summary_block(index: int) -> Block:
    z = torch.zeros(1, 1, 1, 1)
    return Block("s", index, 0.0, 0.0, z, z, torch.zeros(1, 1, dtype=torch.long), 0, 1, z[:, 0, 0], {"summary": True})


def planted(n_blocks=30, layers=3, d=8, seed=0):
    torch.manual_seed(seed)
    query = torch.randn(layers, d)
    rep = torch.randn(n_blocks, layers, 1, d) * 0.01
    return query, rep


def test_sizes_sum_to_the_target_and_stay_in_the_clamped_range():
    torch.manual_seed(0)
    z = torch.randn(4, 50) * torch.tensor([[0.2], [1.0], [3.0], [6.0]])  # flat ... peaked layers
    sizes = adaptive_sizes(z, total=4 * 10, lo=5, hi=15)
    assert all(5 <= s <= 15 for s in sizes)
    assert abs(sum(sizes) - 40) <= 4
    assert sizes[0] > sizes[3]  # a flat layer needs more blocks for the same mass than a peaked one


def test_each_layer_picks_its_planted_block_plus_the_recent_ones():
    query, rep = planted()
    targets = [3, 11, 17]  # one per layer, none among the most recent
    for layer, b in enumerate(targets):
        rep[b, layer, 0] = query[layer] * 10
    ids = list(range(100, 130))
    r = StreamKVRetriever(topk=4, size_temp=0.5, local_blocks=2, similarity="dot")
    chosen = r.select(RetrievalContext(query, rep, ids, window_ids=ids[-3:]))
    for layer, b in enumerate(targets):
        row = chosen.per_layer[layer]
        assert 100 + b in row and {128, 129} <= set(row)  # planted + the 2 most recent
        assert row == sorted(row) and 2 <= len(row) <= 6  # time order; size in [4*(1-.5), 4*(1+.5)]
    # layer-adaptive: each layer's size comes from its own score distribution
    assert chosen.layer_share[111] == 1 / 3


def test_summary_units_are_indexed_and_never_count_as_recent():
    query, rep = planted(n_blocks=10, layers=2)
    r = StreamKVRetriever(topk=2, size_temp=0.0, local_blocks=1, similarity="dot")
    r.observe(summary_block(9))  # the last block is a segment's summary unit
    rep[4, :, 0] = query * 10  # an old frame block is the most relevant
    rep[9, :, 0] = query * 5  # and the summary is relevant too
    chosen = r.select(RetrievalContext(query, rep, list(range(10)), window_ids=[8, 9]))
    # recent = the last *frame* block (8), then the best of the rest: 4 (the summary 9 competes)
    assert all(row == [4, 8] for row in chosen.per_layer)
    r2 = StreamKVRetriever(topk=3, size_temp=0.0, local_blocks=1, similarity="dot")
    r2.observe(summary_block(9))
    assert all(row == [4, 8, 9] for row in r2.select(RetrievalContext(query, rep, list(range(10)), [8, 9])).per_layer)


def test_few_blocks_are_all_taken():
    query, rep = planted(n_blocks=3)
    chosen = StreamKVRetriever(topk=64, similarity="dot").select(RetrievalContext(query, rep, [0, 1, 2], [2]))
    assert chosen.per_layer == [[0, 1, 2]] * 3



def test_a_session_keeps_each_layers_own_number_of_blocks():
    """Layer-adaptive sizes reach the cache: no union of the layers' selections."""
    from streamvqa.engine import Engine
    from streamvqa.policies.retrieval import Selection
    from tests.engine.conftest import get_adapter, make_frames

    session = Engine(adapter=get_adapter("tiny:smolvlm")).open_stream(
        "s", method="rekv", options={"retrieval": "streamkv", "topk": 2, "local_blocks": 1, "n_local": 30})
    for image, t in make_frames(8):
        session.push_frame(image, t)
    real = session.retriever.select
    session.retriever.select = lambda ctx: Selection([[0, 2, 7], [7]], {0: 0.5, 2: 0.5, 7: 1.0})
    answer = session.answer("What happened?", max_tokens=3)
    lengths = [layer.keys.shape[-2] for layer in session.answer_cache.cache.layers]
    per_block, sink = session.store.get_many("s", [0])[0].n_tokens, session.window.sink.n_tokens
    assert answer.blocks_per_layer == [[0, 2, 7], [7]]
    assert lengths == [sink + 3 * per_block, sink + per_block] and answer.token_ids
    session.retriever.select = real
    assert session.answer("What happened?", max_tokens=2).text is not None
