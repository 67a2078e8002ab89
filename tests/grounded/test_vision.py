"""GroundedVision: shapes, any input size, save/load round trip and checksum failure."""

from __future__ import annotations

import pytest
import torch

from streamvqa.models.grounded.vision import (
    GroundedVision,
    GroundedVisionConfig,
    default_weights_path,
    sha256_path,
)


def frames(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, h, w, 3), generator=g, dtype=torch.uint8)


def test_forward_shapes_any_size(fake_lm):
    emb, tok = fake_lm
    v = GroundedVision(GroundedVisionConfig(), emb, tok).eval()
    assert v.image_size == 64
    for h, w in [(64, 64), (120, 160), (37, 53)]:
        out = v(frames(2, h, w))
        assert out.shape == (2, v.n_tokens, 32)
        assert torch.isfinite(out).all()
    assert len(v.describe(frames(1, 64, 64))[0].split()) == v.n_tokens


def test_rejects_bad_layout(fake_lm):
    emb, tok = fake_lm
    v = GroundedVision(GroundedVisionConfig(), emb, tok)
    with pytest.raises(ValueError):
        v(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))


def test_saves_only_trained_weights(fake_lm, tmp_path):
    emb, tok = fake_lm
    v = GroundedVision(GroundedVisionConfig(), emb, tok)
    assert all(p.shape != emb.weight.shape for p in v.parameters())
    v.save(tmp_path / "w.safetensors")
    assert (tmp_path / "w.json").exists()
    assert sha256_path(tmp_path / "w.safetensors").read_text().split()[0]


def test_save_load_roundtrip_and_checksum(fake_lm, tmp_path):
    emb, tok = fake_lm
    torch.manual_seed(1)
    v = GroundedVision(GroundedVisionConfig(), emb, tok).eval()
    with torch.no_grad():
        v.colour_words.add_(1.0)
    path = tmp_path / "w.safetensors"
    v.save(path)
    w = GroundedVision.load(path, emb, tok)
    x = frames(3, 48, 80)
    assert torch.equal(v(x), w(x))
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        GroundedVision.load(path, emb, tok)


def test_missing_checksum_is_an_error(fake_lm, tmp_path):
    emb, tok = fake_lm
    path = tmp_path / "w.safetensors"
    GroundedVision(GroundedVisionConfig(), emb, tok).save(path)
    sha256_path(path).unlink()
    with pytest.raises(ValueError):
        GroundedVision.load(path, emb, tok)


def test_default_weights_path():
    p = default_weights_path()
    assert p.name == "grounded-v6.safetensors" and p.parent.name == "weights"


@pytest.mark.slow
def test_random_init_with_real_lm(real_lm):
    lm, tok = real_lm
    v = GroundedVision(GroundedVisionConfig(), lm.get_input_embeddings(), tok).eval()
    out = v(frames(2, 64, 64))
    assert out.shape == (2, v.n_tokens, 576)
    # a confident "red" colour prediction reproduces the LM's own embedding of " red"
    red = tok(" red", add_special_tokens=False)["input_ids"][-1]
    assert torch.allclose(v.colour_words[1 + v.config.colours.index("red")], lm.get_input_embeddings().weight[red])


def test_compact_caption_fills_occupied_positions_in_order(fake_lm):
    """Object slots take the occupied positions (left, right, top, bottom, centre order), then
    "nothing"; 11 visual tokens per frame."""
    emb, tok = fake_lm
    v = GroundedVision(GroundedVisionConfig(), emb, tok).eval()
    assert v.n_tokens == 11
    b, p = 1, v.n_pos
    colour = torch.full((b, p, v.n_colour), -9.0)
    shape = torch.full((b, p, v.n_shape), -9.0)
    colour[..., 0] = shape[..., 0] = 9.0  # nothing everywhere ...
    for pos, c, s in ((3, 1, 2), (0, 4, 5)):  # ... but bottom: red square, left: yellow cross
        colour[0, pos] = -9.0
        shape[0, pos] = -9.0
        colour[0, pos, c] = shape[0, pos, s] = 9.0
    from streamvqa.models.grounded.vision import SceneParse

    parse = SceneParse(colour=colour, shape=shape, digit=torch.zeros(b, v.n_digit), count=torch.zeros(b, v.n_count))
    idx, used = v.slots(parse)
    assert idx[0, :2].tolist() == [0, 3] and used[0].tolist() == [True, True, False]
    w = v.words(parse)
    assert w.shape == (1, 11, 32)
    assert torch.allclose(w[0, 2], v.colour_words[4], atol=1e-3)  # yellow
    assert torch.allclose(w[0, 4], v.position_words[0])  # left
    assert torch.allclose(w[0, 7], v.position_words[3])  # bottom
    assert torch.allclose(w[0, 8], v.colour_words[0]) and torch.allclose(w[0, 10], v.position_words[p])


def test_soft_prompt_is_saved_and_loaded(fake_lm, tmp_path):
    emb, tok = fake_lm
    v = GroundedVision(GroundedVisionConfig(), emb, tok)
    assert v.prompt.shape == (len(GroundedVisionConfig().prompt_text.split()), 32)
    with torch.no_grad():
        v.prompt.add_(2.0)
    v.save(tmp_path / "w.safetensors")
    w = GroundedVision.load(tmp_path / "w.safetensors", emb, tok)
    assert torch.equal(v.prompt, w.prompt)


def test_default_model_refuses_missing_weights(real_lm, tmp_path):
    """No silent random tower: a default model without its trained weights fails to load."""
    from streamvqa.models.default import DefaultAdapter
    from streamvqa.models.smollm2 import ensure_smollm2

    with pytest.raises(FileNotFoundError, match="grounded vision weights not found"):
        DefaultAdapter.from_pretrained(ensure_smollm2(), vision_weights=tmp_path / "missing.safetensors")
