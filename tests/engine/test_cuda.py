"""The same exactness on CUDA (device is configuration). Runs only where a GPU is present."""

import pytest
import torch

from streamvqa.engine import Engine
from streamvqa.models.loading import load_adapter
from tests.engine.conftest import make_frames

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("name", ["default", "tiny:qwen2_vl", "tiny:llava_onevision"])
@torch.inference_mode()
def test_exact_mode_on_cuda_equals_offline_generate(name):
    adapter = load_adapter(name, device="cuda:0")
    session = Engine(adapter=adapter).open_stream("s", method="full")
    frames = make_frames(4)
    for image, t in frames:
        session.push_frame(image, t)
    answer = session.answer("What colour is the square?", max_tokens=8)
    inputs = adapter.reference_inputs(frames, "What colour is the square?")
    out = adapter.model.generate(**inputs, max_new_tokens=8, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:] if "input_ids" in inputs else out[0]
    expected = []
    for tok in new.tolist():
        if tok in adapter.eos_ids:
            break
        expected.append(tok)
    assert answer.token_ids == expected
    assert adapter.device.type == "cuda"
