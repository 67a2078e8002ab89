"""The pieces of the vllm answer engine that need no vLLM: placeholder ids, the uniform key
shift, the settings. (The end-to-end tests beside this file need `.venv-vllm`.)"""

import pytest
import torch

from streamvqa.answering.vllm_engine import placeholder_ids
from streamvqa.server.settings import ServerSettings
from tests.engine.conftest import get_adapter


def test_placeholder_ids_are_a_function_of_the_memory_identity() -> None:
    a = placeholder_ids(b"session-1/blocks(1,2,3)/end 40", 300, 49152)
    assert a == placeholder_ids(b"session-1/blocks(1,2,3)/end 40", 300, 49152)  # a follow-up: same prefix
    assert len(a) == 300 and all(0 <= i < 49152 for i in a)
    b = placeholder_ids(b"session-1/blocks(1,2,4)/end 40", 300, 49152)
    # another memory shares no leading block of ids with it (vLLM's block hash covers ids and prefix)
    assert a[:128] != b[:128]


@pytest.mark.parametrize("name", ["tiny:smolvlm", "tiny:qwen2_vl"])
@torch.inference_mode()
def test_a_uniform_shift_of_rotated_keys_is_rope_at_the_shifted_positions(name: str) -> None:
    """What the engine sends vLLM: keys rotated at p, then by d, equal keys rotated at p + d (1-D
    RoPE and M-RoPE), so the question at vLLM's position sees the memory as at ours."""
    adapter = get_adapter(name)
    torch.manual_seed(0)
    k = torch.randn(adapter.n_kv_heads, 20, adapter.head_dim)
    rows = adapter.new_positions().rows
    p = torch.arange(5, 25).view(1, -1).expand(rows, -1).clone()
    if rows == 3:
        p[1, 4:8] += 2  # a vision grid: rows differ
    d = -7
    shifted = adapter.rotate(adapter.rotate(k, p), torch.full_like(p, d))
    torch.testing.assert_close(shifted, adapter.rotate(k, p + d), rtol=1e-5, atol=1e-5)


def test_vllm_settings_reach_both_topologies() -> None:
    from streamvqa.server.app import multi_config, question_slots

    assert ServerSettings.from_env({}, answer_engine="vllm").answer_engine == "vllm"
    assert ServerSettings.from_env({"STREAMVQA_ANSWER_ENGINE": "vllm"}).answer_engine == "vllm"
    s = ServerSettings.from_env({}, answer_engine="vllm", topology="multi", answer_device="cpu,cpu",
                                vllm_max_num_seqs=8, run_dir="/tmp/svq-unit")
    cfg = multi_config(s)
    assert cfg.answer_engine == "vllm" and cfg.vllm["max_num_seqs"] == 8
    assert cfg.answer_threads() == 8 + 4  # one RPC thread per question vLLM decodes at once
    assert question_slots(s) == 16  # one vLLM per answer worker, 8 questions each
    assert question_slots(ServerSettings.from_env({}, topology="multi", answer_device="cpu,cpu")) == 2
