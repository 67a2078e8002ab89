"""LM adapters: zero at the start, hooked (training) equals merged (serving), merged once,
saved and loaded with the vision weights, and refused when not merged."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from streamvqa.models.default import DefaultAdapter
from streamvqa.models.grounded.lora import MERGED, TARGETS, LoRA
from streamvqa.models.grounded.vision import GroundedVision, GroundedVisionConfig


def tiny_lm(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def randomise(lora: LoRA, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


IDS = torch.arange(3, 19).view(1, 16)


@torch.no_grad()
def test_adapters_start_at_zero_and_hooks_equal_merge():
    lm = tiny_lm()
    base = lm(IDS).logits
    lora = LoRA.for_model(lm, rank=4, alpha=8.0)
    assert len(lora.adapters) == 2 * len(TARGETS) and lora.scale == 2.0
    handles = lora.hook(lm)
    assert torch.equal(lm(IDS).logits, base)  # B = 0: the LM starts as the real one
    randomise(lora)
    hooked = lm(IDS).logits
    for h in handles:
        h.remove()
    assert (hooked - base).abs().max() > 1e-2
    assert torch.equal(lm(IDS).logits, base)  # removing the hooks restores the LM
    lora.merge_into(lm)
    torch.testing.assert_close(lm(IDS).logits, hooked, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_merge_is_once_per_model():
    lm = tiny_lm()
    lora = LoRA.for_model(lm, rank=2, alpha=4.0)
    randomise(lora)
    lora.merge_into(lm)
    after = lm(IDS).logits
    lora.merge_into(lm)  # the same adapters again: no-op
    assert torch.equal(lm(IDS).logits, after)
    assert MERGED not in dict(lm.named_modules()) and all("lora" not in n for n, _ in lm.named_parameters())
    other = LoRA.for_model(tiny_lm(), rank=2, alpha=4.0)
    with pytest.raises(ValueError, match="other merged adapters"):
        other.merge_into(lm)
    with pytest.raises(ValueError, match="already holds merged"):
        lora.hook(lm)


@torch.no_grad()
def test_saved_with_the_vision_weights_and_refused_unmerged(fake_lm, tmp_path):
    emb, tok = fake_lm
    lm = tiny_lm()
    v = GroundedVision(GroundedVisionConfig(lora_alpha=8.0), emb, tok)
    v.lora = LoRA.for_model(lm, rank=4, alpha=8.0)
    randomise(v.lora)
    v.save(tmp_path / "w.safetensors")
    w = GroundedVision.load(tmp_path / "w.safetensors", emb, tok)
    assert w.lora is not None and w.lora.rank == 4 and w.lora.scale == 2.0
    saved, loaded = v.lora.state_dict(), w.lora.state_dict()
    assert loaded.keys() == saved.keys() and all(torch.equal(loaded[k], saved[k]) for k in saved)
    with pytest.raises(ValueError, match="merge them first"):
        DefaultAdapter(lm, tok, w)
    plain = GroundedVision(GroundedVisionConfig(), emb, tok)
    plain.save(tmp_path / "p.safetensors")
    assert GroundedVision.load(tmp_path / "p.safetensors", emb, tok).lora is None


def test_a_model_without_the_target_projections_is_refused():
    with pytest.raises(ValueError, match="no Linear modules named"):
        LoRA.for_model(torch.nn.Sequential(torch.nn.Linear(4, 4)), rank=2, alpha=4.0)
    with pytest.raises(ValueError, match="no Linear modules named"):
        LoRA.for_model(tiny_lm(), rank=2, alpha=4.0, targets=("qkv",))
