"""StreamingTOM OQM as a retention policy: each new unit becomes a 4-bit group."""

import torch

from streamvqa.policies.memory import RetainContext
from streamvqa.policies.streamingtom import OnlineQuantizedMemory, OQMOptions
from tests.policies.helpers_memory import memory_of


def test_new_units_are_stored_as_4_bit_groups_with_an_exact_representative_key():
    torch.manual_seed(0)
    keys, values = torch.randn(2, 2, 50, 8), torch.randn(2, 2, 50, 8)
    memory = memory_of([{"keys": keys, "values": values, "frame": [0] * 50}], layers=2, heads=2)
    float_bytes = memory.nbytes()
    OnlineQuantizedMemory(OQMOptions()).retain(memory, RetainContext(budget=None, new_units=[0], now=0.0, n_heads=2))
    assert memory.tokens == [0, 0] and set(memory.packed) == {0}
    group = memory.packed[0]
    # 4 bits per element plus fp16 scale and offset per head and channel: about 7x under fp32 here
    assert memory.nbytes() == 2 * 2 * (2 * 50 * 8 // 2 + 2 * 2 * 8 * 2) and memory.nbytes() < float_bytes / 6
    assert torch.allclose(group.rep, keys.mean(dim=2))
    back = memory.view()
    assert back[0].n == 50
    step = (keys.amax(dim=2) - keys.amin(dim=2)) / 15
    assert ((back[1].keys - keys[1]).abs() <= step[1].unsqueeze(1) / 2 + 1e-2).all()
