"""StreamingTOM: CTR (static/dynamic split, saliency top-k, DPC-kNN merge) and OQM, by hand."""

import torch

from streamvqa.policies.memory import TokenMeta
from streamvqa.policies.streamingtom import (
    CausalTemporalReduction,
    CTROptions,
    dequantize,
    pack4,
    quantize,
    reduce_frame,
    unpack4,
)


def test_ctr_keeps_exactly_g_tokens_salient_dynamic_and_merged_static():
    x = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.2, 0.0], [0.0, 0.0, 5.0], [0.0, 1.0, 0.0]])
    prev = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.2, 0.0], [0.0, 5.0, 0.0], [1.0, 0.0, 0.0]])
    out, idx = reduce_frame(x, prev, CTROptions(tokens=2, threshold=0.9, knn=7, beta=0.6))
    # static {0, 1}: k_s = floor(2 * 2 / 4) = 1 centre (token 1, the denser by tie-break),
    # merged 0.6 * x1 + 0.4 * mean(x0, x1); dynamic {2, 3}: k_d = 1, token 2 is the salient one
    assert idx.tolist() == [1, 2]
    assert torch.allclose(out[0], torch.tensor([1.0, 0.16, 0.0]))
    assert torch.equal(out[1], x[2])


def test_ctr_without_a_previous_frame_and_small_frames():
    x = torch.randn(10, 4)
    out, idx = reduce_frame(x, None, CTROptions(tokens=3))
    assert out.shape == (3, 4) and idx.tolist() == sorted(idx.tolist())
    small, idx = reduce_frame(x[:2], None, CTROptions(tokens=3))
    assert torch.equal(small, x[:2]) and idx.tolist() == [0, 1]


def test_reduce_unit_leaves_text_tokens_and_keeps_order():
    ctr = CausalTemporalReduction(CTROptions(tokens=2))
    emb = torch.randn(7, 4)
    meta = TokenMeta(torch.zeros(7, dtype=torch.long), torch.tensor([-1, 0, 1, 2, 3, 4, -1]),
                     torch.tensor([False, True, True, True, True, True, False]))
    out, keep = ctr.reduce_unit(emb, meta)
    assert keep[0] == 0 and keep[-1] == 6 and len(keep) == 4
    assert torch.equal(out[0], emb[0]) and torch.equal(out[-1], emb[6])


def test_oqm_quantizes_per_head_and_channel_and_packs_two_codes_a_byte():
    x = torch.tensor([[[0.0, 10.0], [15.0, 10.0], [7.0, 10.0]]])  # [H=1, n=3, d=2]
    codes, scale, offset = quantize(x, 4)
    assert codes[0, :, 0].tolist() == [0, 15, 7] and codes[0, :, 1].tolist() == [0, 0, 0]
    assert scale[0, 0].tolist() == [1.0, 0.0] and offset[0, 0].tolist() == [0.0, 10.0]
    assert torch.equal(dequantize(codes, scale, offset), x)
    packed = pack4(codes)
    assert packed.numel() == 3 and torch.equal(unpack4(packed, 6).view_as(codes), codes)
    y = torch.randn(2, 50, 8)
    c, s, o = quantize(y, 4)
    assert (dequantize(c, s, o) - y).abs().max() <= s.float().max() / 2 + 1e-3
