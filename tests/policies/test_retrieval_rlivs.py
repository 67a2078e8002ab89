"""rLiVS caption retrieval: MMR (lambda, token budget) over caption embeddings, time order, and
captions prefilled after the blocks of the answer cache."""

import torch
import torch.nn.functional as F

from streamvqa.engine import Engine
from streamvqa.policies.retrieval import Caption, CaptionRetriever, RetrievalContext
from streamvqa.policies.retrieval.base import caption_text
from streamvqa.policies.retrieval.rlivs import mmr
from tests.engine.conftest import get_adapter, make_frames

WORDS = {"red": 0, "car": 1, "dog": 2, "park": 3, "rain": 4, "kitchen": 5}


def bag_embed(texts):
    """A bag-of-words embedder: one axis per word (plus a small shared axis), cost = word count."""
    out = torch.zeros(len(texts), len(WORDS) + 1)
    for i, t in enumerate(texts):
        for w in t.lower().replace("?", "").split():
            if w in WORDS:
                out[i, WORDS[w]] += 1
        out[i, -1] = 0.1
    return out, [len(t.split()) for t in texts]


CAPTIONS = [
    Caption(0, 10, "a dog in the park"),
    Caption(10, 20, "a red car"),
    Caption(20, 30, "a red car again"),  # near-duplicate of the previous caption
    Caption(30, 40, "rain in the kitchen"),
    Caption(40, 50, "a red dog"),
]


def ctx(question, captions=CAPTIONS):
    return RetrievalContext(torch.zeros(2, 4), torch.zeros(0, 2, 1, 4), [], [], question=question,
                            captions=captions, embed_text=bag_embed)


def test_mmr_prefers_a_relevant_new_caption_over_a_duplicate():
    emb, costs = bag_embed([c.text for c in CAPTIONS])
    e = F.normalize(emb, dim=-1)
    q = F.normalize(bag_embed(["red car"])[0], dim=-1)[0]
    relevance = e @ q
    picked = mmr(relevance, e @ e.T, [1] * 5, budget=2, lam=0.5)
    assert picked[0] == 1 and picked[1] != 2  # a red car, then anything but the same car again
    assert mmr(relevance, e @ e.T, [1] * 5, budget=2, lam=1.0) == [1, 2]  # relevance only: the duplicate


def test_captions_fit_the_token_budget_and_come_back_in_time_order():
    r = CaptionRetriever(caption_tokens=8, mmr_lambda=0.5)
    chosen = r.select(ctx("Where was the red car?"))
    texts = [c.text for c in chosen.captions]
    assert sum(len(t.split()) for t in texts) <= 8
    assert "a red car" in texts or "a red car again" in texts
    assert [c.t_start for c in chosen.captions] == sorted(c.t_start for c in chosen.captions)
    assert len(CaptionRetriever(caption_tokens=100).select(ctx("anything")).captions) == 5  # all fit: all used
    assert CaptionRetriever().select(ctx("anything", [])).captions == []


def test_a_session_prefills_the_retrieved_captions_after_the_blocks():
    adapter = get_adapter("tiny:smolvlm")
    session = Engine(adapter=adapter).open_stream("s", method="rekv", options={"retrieval": "rlivs", "n_local": 40})
    for image, t in make_frames(6):
        session.push_frame(image, t)
    plain = session.answer("What happened?", max_tokens=3)
    assert plain.blocks_per_layer[0] == session.window.block_ids  # short-term memory only
    base_len = session.answer_cache.length
    session.captions = [Caption(0.0, 2.0, "A red car drove by."), Caption(2.0, 4.0, "A dog sat down.")]
    answer = session.answer("What happened?", max_tokens=3)
    n_text = adapter.text_segment(caption_text(session.captions)).n
    assert session.answer_cache.length == base_len + n_text and not answer.reused_cache
    assert caption_text(session.captions).startswith("[00:00:00-00:00:02] A red car drove by.\n")
