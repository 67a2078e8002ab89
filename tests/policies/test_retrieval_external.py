"""ReKV external retrieval: frames and question embedded by a CLIP/SigLIP from a local directory
(here a tiny random CLIP built offline); refused with stable codes when none is configured."""

import numpy as np
import pytest
import torch

from streamvqa.engine import Engine, EngineError
from streamvqa.policies.presets import MethodError, resolve
from streamvqa.policies.retrieval import ReKVExternalRetriever, RetrievalContext
from streamvqa.policies.retrieval.rekv_external import ENV, ImageTextEncoder
from streamvqa.store.block import Block
from tests.engine.conftest import get_adapter, make_frames


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPModel

    from streamvqa.models.tokenizer import build_tokenizer

    out = tmp_path_factory.mktemp("clip")
    tok = build_tokenizer()
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 64, "eos_token_id": tok.eos_token_id},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def block(index: int) -> Block:
    z = torch.zeros(1, 1, 1, 1)
    return Block("s", index, float(index), float(index), z, z, torch.zeros(1, 1, dtype=torch.long), 0, 1, z[:, 0, 0])


def test_the_block_whose_frame_matches_the_question_is_picked_for_every_layer(clip_dir):
    encoder = ImageTextEncoder(clip_dir)
    frames = [img for img, _ in make_frames(8, seed=2)]
    question = "Where is the red square?"
    q = encoder.text(question)
    sims = encoder.images(frames) @ q
    target = int(sims.argmax())
    r = ReKVExternalRetriever(topk=1, encoder=encoder)
    for i, f in enumerate(frames):
        r.observe(block(i), [f])
    ctx = RetrievalContext(torch.zeros(3, 4), torch.zeros(8, 3, 1, 4), list(range(8)), [7], question=question)
    assert r.select(ctx).per_layer == [[target]] * 3
    # plant: make another block's frame the question's best match
    planted = (target + 3) % 8
    r.frames[planted] = q
    assert r.select(ctx).per_layer == [[planted]] * 3
    top3 = ReKVExternalRetriever(topk=3, encoder=encoder)
    top3.frames = dict(r.frames)
    assert top3.select(ctx).per_layer[0] == sorted(torch.topk(torch.stack([r.frames[i] @ q for i in range(8)]), 3).indices.tolist())


def test_without_an_encoder_the_preset_is_refused_with_a_stable_code(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(MethodError) as e:
        resolve("rekv-external")
    assert e.value.code == "encoder_not_configured" and "encoder_dir" in str(e.value)
    with pytest.raises(MethodError) as e:
        resolve("rekv-external", {"encoder_dir": str(tmp_path)})  # no model there
    assert e.value.code == "encoder_unavailable"
    with pytest.raises(EngineError) as e:
        Engine(adapter=get_adapter("tiny:smolvlm")).open_stream("s", method="rekv-external")
    assert e.value.code == "encoder_not_configured"


def test_a_session_with_the_configured_encoder_retrieves_by_frames(clip_dir, monkeypatch):
    monkeypatch.setenv(ENV, str(clip_dir))
    session = Engine(adapter=get_adapter("tiny:smolvlm")).open_stream(
        "s", method="rekv-external", options={"topk": 2, "n_local": 30})
    frames = make_frames(6, seed=4)
    for image, t in frames:
        session.push_frame(image, t)
    assert sorted(session.retriever.frames) == list(range(6))  # every unit embedded as it was written
    answer = session.answer("What is shown?", max_tokens=2)
    rows = answer.blocks_per_layer
    assert all(row == rows[0] for row in rows) and len(rows[0]) == 2  # one ranking, all layers
    enc = session.retriever.encoder
    sims = enc.images([np.asarray(f) for f, _ in frames]) @ enc.text("What is shown?")
    assert rows[0] == sorted(sims.topk(2).indices.tolist())
