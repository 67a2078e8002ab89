"""What an answer reads from a retained memory: all of it plus what retrieval adds
(`keep_memory=True`), or, with `keep_memory="unmatched"`, only what retrieval chooses among the
memory and the archived units alike, and the whole memory when the question names nothing."""

import pytest
import torch

from streamvqa.policies.presets import MethodError, resolve
from streamvqa.policies.retainer import Retainer
from streamvqa.policies.retrieval import InputMatchRetriever, Selection
from streamvqa.store.base import StreamIndex
from tests.policies.helpers_memory import memory_of

LAYERS = 2


def retainer(keep_memory) -> Retainer:
    r = Retainer(None, None, None, rotate=lambda k, p: k, n_heads=1, keep_memory=keep_memory)
    # four recent units 0..3 in memory; units 10 and 11 left it (their inputs are archived)
    r.memory = memory_of([{"keys": torch.randn(2, 4), "values": torch.randn(2, 4), "t": 20.0 + i} for i in range(4)],
                         layers=LAYERS)
    return r


ARCHIVED = StreamIndex([10, 11], torch.zeros(2, LAYERS, 1, 4), [(1.0, 1.0), (2.0, 2.0)])


def select(keep_memory, picked: list[int], named: bool) -> tuple[list[list[int]], list[int]]:
    pools: list[list[int]] = []

    def retrieve(ids, rep, times):
        pools.append(list(ids))
        assert rep.shape[0] == len(ids) == len(times)
        return Selection([picked] * LAYERS, dict.fromkeys(picked, 1.0), named=named)

    sel, times = retainer(keep_memory).select(InputMatchRetriever(), retrieve, LAYERS, None, [], ARCHIVED)
    assert set(times) == {0, 1, 2, 3, 10, 11}
    return sel.per_layer, pools[0]


@pytest.mark.parametrize("named", [True, False])
def test_kept_memory_is_always_read_and_only_archived_units_compete(named):
    per_layer, pool = select(True, [10], named)
    assert pool == [10, 11] and per_layer == [[0, 1, 2, 3, 10]] * LAYERS


def test_unmatched_reads_only_what_retrieval_chose_from_memory_and_archive():
    per_layer, pool = select("unmatched", [2, 10], named=True)
    assert pool == [0, 1, 2, 3, 10, 11] and per_layer == [[2, 10]] * LAYERS  # units 0, 1, 3 not read


def test_unmatched_reads_the_whole_memory_when_the_question_names_nothing():
    per_layer, _ = select("unmatched", [10], named=False)
    assert per_layer == [[0, 1, 2, 3]] * LAYERS  # the present, not the tie-broken pick


def test_keep_memory_takes_a_bool_or_unmatched_and_refuses_anything_else():
    assert resolve("hybrid").keep_memory == "unmatched" and resolve("hybrid-kv").keep_memory is True
    assert resolve("rekv", {"retention": "streamingvlm", "keep_memory": "unmatched"}).keep_memory == "unmatched"
    with pytest.raises(MethodError, match="'unmatched'") as e:
        resolve("hybrid", {"keep_memory": "sometimes"})
    assert e.value.code == "invalid_options"
