"""rLiVS: attention selection of a clip's visual tokens, by hand."""

import torch

from streamvqa.policies.memory import RetainContext
from streamvqa.policies.rlivs import RLiVS, RLiVSOptions, select_tokens
from tests.policies.helpers_memory import memory_of

IDENTITY = lambda k, p: k  # noqa: E731


def test_selection_takes_the_top_fraction_in_temporal_order():
    assert select_tokens(torch.tensor([0.1, 0.5, 0.2, 0.9]), 0.5).tolist() == [1, 3]
    assert select_tokens(torch.tensor([0.1, 0.5, 0.2, 0.9]), 0.01).tolist() == [3]


def test_a_clip_keeps_its_most_attended_tokens_and_writes_a_caption():
    memory = memory_of([{"keys": [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [-1.0, 0.0]],
                         "values": [[1.0, 0.0]] * 4, "frame": [0, 0, 1, 1], "patch": [0, 1, 0, 1]}])
    captions = []

    def generate(_prompt, _n):
        return [7], "a cat", [torch.tensor([[[0.0, 5.0]]])], torch.zeros(1, 1, dtype=torch.long)

    RLiVS(RLiVSOptions(selection=0.25)).retain(memory, RetainContext(
        budget=None, new_units=[0], now=1.0, n_heads=1, generate=generate, rotate=IDENTITY,
        add_caption=lambda t0, t1, text: captions.append((t0, t1, text))))
    assert memory.layers[0].patch[0].tolist() == [1]  # key (0,1) is the one the caption attends to
    assert captions == [(0.0, 1.0, "a cat")]
