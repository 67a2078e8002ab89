"""`streamvqa models --measure`: the published sizes are the cards' and the measured KV is the
analytic one (tokens x layers x 2 x KV heads x head size x bytes)."""

from __future__ import annotations

import pytest

from streamvqa.models.sizes import SIZES, measure, published_size_config


@pytest.mark.parametrize("name", list(SIZES))
def test_published_sizes_keep_the_family_facts(name):
    family, text, vision = SIZES[name]
    cfg = published_size_config(name)
    tc = cfg.get_text_config()
    assert (tc.num_hidden_layers, tc.num_key_value_heads) == (text["num_hidden_layers"], text["num_key_value_heads"])
    assert tc.head_dim == text["hidden_size"] // text["num_attention_heads"] in (64, 128)
    geo = published_size_config(name, geometry=True).get_text_config()
    assert (geo.num_hidden_layers, geo.num_key_value_heads, geo.head_dim) == (
        tc.num_hidden_layers, tc.num_key_value_heads, tc.head_dim)


@pytest.mark.slow
def test_measured_kv_is_the_analytic_kv():
    """SmolVLM2-256M as its attention geometry (max_gb=0): 30 layers x 3 KV heads x 64, bf16."""
    r = measure("SmolVLM2-256M-Video-Instruct", frames=2, max_gb=0.0, dtype="bfloat16")
    assert r.mode == "geometry" and r.encode_s_per_frame is None and r.frames == 3
    assert r.tokens_per_frame >= 64 + 3  # 64 image tokens, <fake><global-img> ... <fake>, the stamp
    assert r.kv_bytes_per_frame == r.tokens_per_frame * 30 * 2 * 3 * 64 * 2
    assert r.stored_bytes_per_frame > r.kv_bytes_per_frame
    assert r.kv_gib_per_hour["1"] == pytest.approx(2 * r.kv_gib_per_hour["0.5"], abs=0.011)


def test_long_stream_for_first_token_is_built_from_the_encoded_blocks():
    """`first_token_after`: 1 minute at 0.5 fps = 30 blocks (the 3 encoded ones repeated at later
    times and contiguous positions), the window rebuilt from the store, then one answer."""
    from streamvqa.engine import Engine
    from streamvqa.models.sizes import camera_frame, first_token_after
    from tests.engine.conftest import get_adapter

    session = Engine(adapter=get_adapter("tiny:smolvlm")).open_stream("long", method="rekv")
    for i in range(3):
        session.push_frame(camera_frame(i), float(i))
    session.flush()
    assert first_token_after(session, 1.0, fps=0.5) > 0
    idx = session.store.index("long")
    blocks = session.get_blocks(idx.indices)
    assert idx.indices == list(range(30)) and session.next_index == 30
    assert all(a.pos_end == b.pos_start for a, b in zip(blocks, blocks[1:], strict=False))
    assert [b.t_start for b in blocks[3:]] == [i / 0.5 for i in range(3, 30)]
    assert session.window.blocks[-1].index == 29
    answer = session.answer("What is moving?", max_tokens=1)
    assert answer.evidence and max(t for _, t in answer.evidence) <= 58.0


def test_measure_refuses_an_unknown_checkpoint(capsys):
    from streamvqa.cli import main

    assert main(["models", "--measure", "--only", "Nope-1B"]) == 2
    assert "unknown checkpoint" in capsys.readouterr().out
