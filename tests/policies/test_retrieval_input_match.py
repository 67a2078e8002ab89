"""Input matching: a question's words and adjacent word pairs matched by a unit's input tokens
(words by the best token, pairs by the best adjacent pair), then the fewest units that together
cover them, greedily; it needs the input embeddings."""

import pytest
import torch

from streamvqa.policies.presets import MethodConfig, resolve
from streamvqa.policies.retrieval import InputMatchRetriever, RetrievalContext
from streamvqa.policies.retrieval.input_match import cover, match_features

# one axis per word: a caption token is a word's direction
RED, BLUE, CIRCLE, CROSS, THE = torch.eye(5)


def test_features_by_hand():
    question = torch.stack([RED, CIRCLE])  # "red circle": two words, one phrase
    shows = torch.stack([RED, CIRCLE])  # a red circle
    apart = torch.stack([RED, CROSS, BLUE, CIRCLE])  # a red cross and a blue circle: both words, not the phrase
    half = torch.stack([RED + CIRCLE])  # one token halfway to both (norm irrelevant)
    got = [match_features(question, u, word=0.1, phrase=3.0, power=2.0) for u in (shows, apart, half)]
    assert torch.allclose(got[0], torch.tensor([0.1, 0.1, 3.0]))
    assert torch.allclose(got[1], torch.tensor([0.1, 0.1, 0.0]))  # red then cross: min(1, 0) for the pair
    assert torch.allclose(got[2], torch.tensor([0.05, 0.05, 0.0]))  # cos 45 squared; one token has no pair
    assert torch.allclose(match_features(question, -shows), torch.zeros(3))  # opposite: clamped to 0
    assert torch.allclose(match_features(question, torch.zeros(0, 5)), torch.zeros(3))  # an empty frame
    assert torch.allclose(match_features(question, shows, power=1.0, word=1.0, phrase=1.0), torch.ones(3))


def test_cover_takes_the_fewest_blocks_that_add_enough():
    features = torch.tensor([[1.0, 1.0, 0.0, 0.0],  # feature 0: blocks 0 and 1 (a tie)
                             [0.0, 0.0, 0.9, 0.1],  # feature 1: block 2
                             [0.1, 0.1, 0.1, 0.1]])  # a weak feature every block has
    assert cover(features, k=4, min_gain=0.4, tie=0.001) == [(1, pytest.approx(1.1)), (2, pytest.approx(0.9))]
    # block 1 wins the tie (the later one); block 3 would add 0.0: stopped; at k=1 one block only
    assert cover(features, k=1, min_gain=0.0, tie=0.001) == [(1, pytest.approx(1.1))]
    assert [j for j, _ in cover(features, k=4, min_gain=0.0, tie=0.001)] == [1, 2, 3, 0]  # 0 and 3 add nothing: tie
    assert [j for j, _ in cover(features, k=4, min_gain=0.9, tie=0.001)] == [1]  # 0.9 < 0.9 * 1.1


def context(inputs, question, n_layers=3):
    n = len(inputs)
    return RetrievalContext(query=torch.zeros(n_layers, 4), rep_keys=torch.zeros(n, n_layers, 1, 4),
                            block_ids=list(range(10, 10 + n)), window_ids=[], inputs=inputs,
                            question_inputs=question)


def test_a_near_miss_does_not_outrank_the_frame_that_shows_the_phrase():
    frames = [torch.stack([RED, CROSS, BLUE, CIRCLE]),  # both words, apart: the near miss
              torch.stack([RED, CIRCLE]),  # the red circle
              torch.stack([BLUE, CROSS])]  # the blue cross
    sel = InputMatchRetriever().select(context(frames, torch.stack([THE, RED, CIRCLE])))
    assert sel.per_layer == [[11]] * 3 and sel.layer_share == {11: 1.0}
    # "the red circle or the blue cross": one frame per phrase, in time order, every layer
    both = torch.stack([THE, RED, CIRCLE, THE, BLUE, CROSS])
    sel = InputMatchRetriever().select(context(frames, both))
    assert sel.per_layer == [[11, 12]] * 3 and set(sel.score) == {11, 12}
    assert InputMatchRetriever(topk=1).select(context(frames, both)).size == 1
    assert InputMatchRetriever(topk=None).select(context(frames, both)).per_layer == [[10, 11, 12]] * 3
    assert not InputMatchRetriever().needs_query(100)  # no question forward pass


def test_a_single_word_counts_above_what_every_frame_matches():
    frames = [torch.stack([THE + RED, CROSS]), torch.stack([THE + BLUE, CIRCLE]), torch.stack([THE + RED, CROSS])]
    # "the" every frame half matches (the median: centred away); "circle" one frame shows
    sel = InputMatchRetriever().select(context(frames, torch.stack([THE, CIRCLE])))
    assert sel.per_layer == [[11]] * 3
    # nothing named: every gain is zero, and ties go to the latest frames
    assert InputMatchRetriever(topk=2).select(context(frames, torch.stack([THE]))).per_layer == [[11, 12]] * 3


def test_a_question_naming_nothing_shown_is_flagged_below_min_match():
    frames = [torch.stack([RED, CROSS]), torch.stack([BLUE, CIRCLE]), torch.stack([BLUE, CROSS])]
    # one word, "circle": a single weighted word gains 0.3, yet it names what frame 11 shows
    r = InputMatchRetriever(min_match=0.25)
    named = r.select(context(frames, torch.stack([THE, CIRCLE])))
    assert named.named and named.per_layer == [[11]] * 3
    assert r.strongest(r.features(context(frames, torch.stack([THE, CIRCLE])))) == pytest.approx(1.0)
    # half-way to "circle" (cos^2 0.5) still names it; a tenth of the way does not
    assert r.select(context(frames, torch.stack([THE + CIRCLE]))).named
    vague = r.select(context(frames, torch.stack([THE, 0.3 * CIRCLE + THE])))
    assert not vague.named and vague.size >= 1  # still chosen by the rules above: the caller decides
    assert InputMatchRetriever().select(context(frames, torch.stack([THE, THE]))).named  # default 0: always
    with pytest.raises(ValueError):
        MethodConfig(retrieval="input-match", retrieval_options={"min_match": 1.5})


def test_it_refuses_to_score_without_inputs():
    ctx = context([torch.stack([RED])], torch.stack([RED]))
    ctx.inputs = None
    with pytest.raises(ValueError, match="input embeddings"):
        InputMatchRetriever().select(ctx)


def test_method_config_names_it_and_the_answer_source():
    cfg = resolve("rekv", {"retrieval": "input-match", "topk": 5, "answer_from": "inputs"})
    assert cfg.retrieval == "input-match" and cfg.retrieval_options["topk"] == 5 and cfg.answer_from == "inputs"
    assert cfg.retriever().needs_inputs
    with pytest.raises(ValueError):
        MethodConfig(answer_from="pixels")
    for bad in ({"power": 0}, {"min_gain": 1.5}, {"phrase": -1}, {"tie": 1}):
        with pytest.raises(ValueError):
            MethodConfig(retrieval="input-match", retrieval_options=bad)
