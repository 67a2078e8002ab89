"""LiveVLM PaR: pages of C position-free keys, top ratio of pages, short-term memory always in."""

import torch

from streamvqa.policies.retrieval import PaRRetriever, ReKVRetriever, RetrievalContext
from streamvqa.policies.retrieval.livevlm import page_keys
from streamvqa.store.block import Block

LAYERS, KV_HEADS, D, TOKENS = 2, 1, 8, 32  # 32 tokens per block: two pages of 16


def block(index: int, keys: torch.Tensor) -> Block:
    return Block("s", index, float(index), float(index), keys, torch.zeros_like(keys),
                 torch.arange(TOKENS).view(1, -1), 0, TOKENS, keys.mean(dim=2))


def test_page_representatives_are_means_of_consecutive_keys():
    keys = torch.arange(2 * 1 * 40 * 1, dtype=torch.float32).view(2, 1, 40, 1)
    pages = page_keys(keys, 16)
    assert pages.shape == (3, 2, 1, 1)  # 16 + 16 + 8 tokens
    assert pages[2, 0, 0, 0] == keys[0, 0, 32:, 0].mean()


def test_a_block_with_one_relevant_page_is_found_where_its_mean_key_hides_it():
    torch.manual_seed(0)
    query = torch.randn(LAYERS, D)
    blocks = [block(i, torch.randn(LAYERS, KV_HEADS, TOKENS, D) * 0.1) for i in range(10)]
    # block 2: its first page matches the question, its second page cancels it in the block mean
    k = blocks[2].keys
    k[:, 0, :16] = query[:, None] * 2
    k[:, 0, 16:] = -query[:, None] * 2
    blocks[2] = block(2, k)
    r = PaRRetriever(page_size=16, page_ratio=0.1, similarity="dot")
    for b in blocks:
        r.observe(b)
    ctx = RetrievalContext(query, torch.stack([b.rep_keys for b in blocks]), list(range(10)), window_ids=[9])
    chosen = r.select(ctx)
    assert all(2 in row and 9 in row for row in chosen.per_layer)  # the page's block + short-term memory
    assert len({len(row) for row in chosen.per_layer}) == 1  # equal lengths across layers
    rekv = ReKVRetriever(topk=1, similarity="dot").select(ctx)  # the mean key of block 2 is about zero
    assert all(row != [2] for row in rekv.per_layer)


def test_the_ratio_sets_how_many_pages_and_short_term_memory_is_always_included():
    torch.manual_seed(1)
    query = torch.randn(LAYERS, D)
    blocks = [block(i, torch.randn(LAYERS, KV_HEADS, TOKENS, D)) for i in range(20)]
    r_small, r_big = PaRRetriever(16, 0.05, "dot"), PaRRetriever(16, 0.5, "dot")
    for b in blocks:
        r_small.observe(b)
        r_big.observe(b)
    ctx = RetrievalContext(query, torch.stack([b.rep_keys for b in blocks]), list(range(20)), window_ids=[18, 19])
    small, big = r_small.select(ctx), r_big.select(ctx)
    assert small.size < big.size <= 20
    assert all({18, 19} <= set(row) for row in small.per_layer + big.per_layer)
