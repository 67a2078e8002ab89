"""Input matching: each question token's best cosine with a unit's input tokens, clamped at
zero and squared, summed; every layer takes the same top-k; it needs the input embeddings."""

import pytest
import torch

from streamvqa.policies.presets import MethodConfig, resolve
from streamvqa.policies.retrieval import InputMatchRetriever, RetrievalContext
from streamvqa.policies.retrieval.input_match import match_scores

E1, E2 = [1.0, 0.0], [0.0, 1.0]


def test_scores_by_hand():
    question = torch.tensor([E1, E2])  # two question tokens
    units = [
        torch.tensor([E1]),  # shows the first word: 1^2 + 0^2
        torch.tensor([[3.0, 3.0]]),  # halfway to both (norm irrelevant): 2 * cos(45)^2
        torch.tensor([[-1.0, 0.0], [0.0, -2.0]]),  # opposite of both: clamped to 0
        torch.tensor([E2, [1.0, 0.1]]),  # both words, each by its best token
        torch.zeros(0, 2),  # a unit with no tokens (an empty frame)
    ]
    got = match_scores(question, units, power=2.0)
    c = 1 / (1 + 0.01) ** 0.5  # cos([1, 0.1], E1)
    assert torch.allclose(got, torch.tensor([1.0, 1.0, 0.0, 1.0 + c * c, 0.0]), atol=1e-6)
    assert torch.allclose(match_scores(question, units[:2], power=1.0), torch.tensor([1.0, 2 ** 0.5]), atol=1e-6)


def context(n_layers=3):
    inputs = [torch.tensor([E1]), torch.tensor([E2]), torch.tensor([[1.0, 1.0]]), torch.tensor([[-1.0, -1.0]])]
    return RetrievalContext(query=torch.zeros(n_layers, 4), rep_keys=torch.zeros(4, n_layers, 1, 4),
                            block_ids=[10, 11, 12, 13], window_ids=[], inputs=inputs,
                            question_inputs=torch.tensor([E2]))


def test_every_layer_takes_the_same_top_k_in_time_order():
    sel = InputMatchRetriever(topk=2).select(context())
    assert sel.per_layer == [[11, 12]] * 3  # E2 itself, then the unit halfway to it
    assert sel.layer_share == {11: 1.0, 12: 1.0}
    assert not InputMatchRetriever(topk=2).needs_query(100)  # no question forward pass


def test_it_refuses_to_score_without_inputs():
    ctx = context()
    ctx.inputs = None
    with pytest.raises(ValueError, match="input embeddings"):
        InputMatchRetriever(topk=2).select(ctx)


def test_method_config_names_it_and_the_answer_source():
    cfg = resolve("rekv", {"retrieval": "input-match", "topk": 5, "answer_from": "inputs"})
    assert cfg.retrieval == "input-match" and cfg.retrieval_options["topk"] == 5 and cfg.answer_from == "inputs"
    assert cfg.retriever().needs_inputs
    with pytest.raises(ValueError):
        MethodConfig(answer_from="pixels")
    with pytest.raises(ValueError):
        MethodConfig(retrieval="input-match", retrieval_options={"power": 0})
