"""StreamingVLM: the vision window and the text sink/window, by hand."""

import torch

from streamvqa.policies.memory import RetainContext
from streamvqa.policies.streamingvlm import StreamingVLM, StreamingVLMOptions, keep_mask
from tests.policies.helpers_memory import memory_of


def _memory():
    tok = [[1.0, 0.0]]
    return memory_of([
        {"keys": tok * 4, "values": tok * 4, "visual": [False, True, True, False], "t": 0.0},
        {"keys": tok * 3, "values": tok * 3, "visual": [False, True, False], "t": 4.0},
        {"keys": tok * 2, "values": tok * 2, "visual": [False, True], "t": 10.0},
    ])


def test_old_vision_goes_and_previous_text_keeps_its_sink_and_window():
    memory = _memory()
    o = StreamingVLMOptions(vision_window_s=5.0, text_sink=1, text_window=1)
    t_end = torch.tensor([0.0, 4.0, 10.0])
    mask = keep_mask(memory.layers[0], t_end, now=10.0, o=o)
    # units 0 and 1 left the window; their text tokens are [u0 t, u0 t, u1 t, u1 t]: keep first and last
    assert mask[0].tolist() == [True, False, False, False, False, False, True, True, True]


def test_retention_applies_the_windows_and_forgets_units_left_empty():
    memory = _memory()
    StreamingVLM(StreamingVLMOptions(vision_window_s=1.0, text_sink=0, text_window=0)).retain(
        memory, RetainContext(budget=None, new_units=[2], now=10.0, n_heads=1))
    assert memory.tokens == [2] and set(memory.units) == {2}
