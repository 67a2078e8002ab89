"""The same exactness on CUDA (device is configuration). Runs only where a GPU is present."""

import pytest
import torch

from streamvqa.engine import Engine
from streamvqa.models.loading import load_adapter
from tests.engine.conftest import make_frames, reference_tokens

QUESTION = "What colour is the square?"

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("name", ["default", "tiny:qwen2_vl", "tiny:qwen3_vl", "tiny:llava_onevision"])
@torch.inference_mode()
def test_exact_mode_on_cuda_equals_offline_generate(name):
    adapter = load_adapter(name, device="cuda:0")
    session = Engine(adapter=adapter).open_stream("s", method="full")
    frames = make_frames(4)
    for image, t in frames:
        session.push_frame(image, t)
    answer = session.answer(QUESTION, max_tokens=8)
    expected = reference_tokens(adapter, frames, QUESTION, 8)
    assert answer.token_ids == expected
    assert adapter.device.type == "cuda"


def test_captured_tensors_come_back_through_pinned_memory():
    from streamvqa.engine.capture import to_host

    x = torch.randn(2, 3, 4, device="cuda:0")
    host = to_host(x)
    assert host.device.type == "cpu" and host.is_pinned()
    assert torch.equal(host, x.cpu())
