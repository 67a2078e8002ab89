"""Qwen3-VL specifics: DeepStack features matter and travel with the visual tokens; the stream is
laid out as its processor lays out one video (timestamp + block per temporal patch)."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from tests.models.conftest import make_frames, stream_pieces

Q = "What is happening in the video?"


def _logits(a, emb, pos):
    return a.forward(emb, pos, DynamicCache(config=a.model.config))


def test_deepstack_is_applied(adapters):
    """Dropping the DeepStack columns changes the logits a lot; with them they equal the model's
    own pixel path (test_adapters), so the adapter really injects them."""
    a = adapters("qwen3_vl")
    pieces = stream_pieces(a, make_frames(2, seed=7), Q)
    tr = a.new_positions()
    pos = torch.cat([tr.place(p) for p in pieces], dim=1)
    emb = torch.cat([a.embed(p) for p in pieces], dim=1)
    assert emb.shape[-1] == a.hidden * (1 + a.deepstack) and a.deepstack == 2
    plain = emb.clone()
    plain[..., a.hidden :] = 0
    assert (_logits(a, emb, pos) - _logits(a, plain, pos)).abs().max().item() > 1e-2


def test_decode_step_embeddings_are_plain(adapters):
    """A token embedding of the hidden width (decode steps) runs without DeepStack arguments."""
    a = adapters("qwen3_vl")
    x = a.backbone.get_input_embeddings()(torch.tensor([[5]]))
    assert a.decoder_inputs(x) == (x, {})
    seg = a.text_segment("hi")
    narrow, extra = a.decoder_inputs(a.embed([seg]))  # text only: zero DeepStack columns
    assert extra == {} and torch.equal(narrow, a.backbone.get_input_embeddings()(seg.ids).unsqueeze(0))


def test_layout_is_the_processors(adapters):
    """A 3-frame unit is two temporal patches (the last frame padded), each behind its timestamp,
    all inside the chat template's outer <|vision_start|> ... <|vision_end|>."""
    a = adapters("qwen3_vl")
    ref = a.reference_inputs(make_frames(3, seed=8), Q, unit_frames=3)
    text = a.tokenizer.decode(ref["input_ids"][0])
    pads = "<|video_pad|>" * 6
    block = f"<1.0 seconds><|vision_start|>{pads}<|vision_end|>"
    assert f"user\n<|vision_start|>{block}{block}<|vision_end|>{Q}" in text
    assert ref["video_grid_thw"].tolist() == [[2, 4, 6]]


def test_capture_hooks_only_observe(adapters):
    """A hook on the pre-RoPE "projections" that returns a tensor does not change the forward."""
    a = adapters("qwen3_vl")
    pieces = stream_pieces(a, make_frames(1, seed=9), Q)
    tr = a.new_positions()
    pos = torch.cat([tr.place(p) for p in pieces], dim=1)
    emb = torch.cat([a.embed(p) for p in pieces], dim=1)
    plain = _logits(a, emb, pos)
    seen = []
    handle = a.attention_layers()[0].k_proj.register_forward_hook(lambda m, i, o: seen.append(o) or o * 0)
    try:
        hooked = _logits(a, emb, pos)
    finally:
        handle.remove()
    assert torch.equal(plain, hooked)
    assert seen[0].shape == (1, emb.shape[1], a.n_kv_heads * a.head_dim)
