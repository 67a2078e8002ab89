"""Retrieval options per policy: pydantic models with the defaults in one place, unknown names
refused; the top-level names requests and the CLI used before (`topk`, `similarity`, ...) still
work, validated where the method is resolved."""

import inspect

import pytest

from streamvqa.policies.presets import PRESETS, MethodError, resolve
from streamvqa.policies.retrieval import RETRIEVERS, CaptionRetriever


@pytest.mark.parametrize("name", sorted(RETRIEVERS))
def test_a_policy_constructor_has_its_options_defaults(name):
    policy = RETRIEVERS[name].policy
    fields = policy.Options.model_fields
    if policy is CaptionRetriever:  # built from its options by `from_options` (its block retriever)
        assert fields["similarity"].default == "cosine" and fields["caption_tokens"].default == 20000
        return
    params = inspect.signature(policy.__init__).parameters
    for field, info in fields.items():
        assert params[field].default == info.default, (name, field)


def test_presets_keep_their_retrieval_settings():
    rekv = resolve("rekv").retriever()
    assert (rekv.topk, rekv.similarity, rekv.score_mass, rekv.min_blocks) == (64, "cosine", None, 1)
    hybrid = resolve("hybrid-kv").retriever()
    assert (hybrid.topk, hybrid.similarity, hybrid.score_mass, hybrid.min_blocks) == (64, "cosine", None, 1)
    matched = resolve("hybrid").retriever()
    assert (type(matched).__name__, matched.topk, matched.phrase, matched.min_gain) == ("InputMatchRetriever", 4, 3.0, 0.4)
    assert resolve("streamkv").retriever().similarity == "cosine"
    assert resolve("livevlm").retriever().similarity == "cosine"
    assert resolve("streamingtom").retriever().retrieve_tokens == 12544
    for name, (_, config) in PRESETS.items():  # stored with every default filled in
        assert config.retrieval_options == RETRIEVERS[config.retrieval].policy.Options().model_dump() \
            or name == "hybrid"


def test_top_level_names_still_work_and_the_nested_form_wins():
    assert resolve("rekv", {"topk": 2}).retriever().topk == 2
    assert resolve("rekv", {"similarity": "dot"}).retriever().similarity == "dot"
    mixed = resolve("rekv", {"topk": 3, "retrieval_options": {"score_mass": 0.9}}).retrieval_options
    assert (mixed["topk"], mixed["score_mass"]) == (3, 0.9)  # a top-level name leaves the others alone
    assert resolve("rekv", {"topk": 2, "retrieval_options": {"topk": 5}}).retriever().topk == 5
    pages = resolve("rekv", {"retrieval": "livevlm", "page_ratio": 0.2, "topk": 2}).retriever()
    assert pages.ratio == 0.2  # topk: not a PaR option, ignored as it always was


@pytest.mark.parametrize("options", [
    {"retrieval_options": {"bogus": 1}}, {"retrieval_options": {"topk": 0}}, {"topk": 0},
    {"similarity": "l2"}, {"retrieval": "livevlm", "retrieval_options": {"topk": 2}},
])
def test_bad_retrieval_options_are_refused(options):
    with pytest.raises(MethodError) as e:
        resolve("rekv", options)
    assert e.value.code == "invalid_options"
