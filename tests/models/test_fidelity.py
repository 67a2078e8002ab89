"""Fidelity to the published checkpoints (Qwen3-VL-2B, Qwen2.5-VL-3B, Qwen2-VL-2B, SmolVLM2-256M,
Idefics3-8B, LLaVA-OneVision-0.5B):
models built from their public configuration facts, reduced in depth and width only. The adapters'
pieces are the token ids the family's chat template and processor give for the same inputs (for
LLaVA-OneVision the visual blocks only, docs/models.md), and the adapters stay exact
with the published head size, rotary sections, DeepStack count and special-token ids."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import DynamicCache

from streamvqa.models import template as chat
from streamvqa.models.published import PUBLISHED, QWEN_SPECIALS, SMOLVLM_SPECIALS
from tests.models.conftest import make_frames, stream_pieces

Q = "What is happening in the video?"
QWEN = [f for f in PUBLISHED if f.startswith("qwen")]
IDEFICS = ["smolvlm", "idefics3"]
SYSTEM = chat.PREFIX.split("system\n", 1)[1].split("<|im_end|>", 1)[0]


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    from streamvqa.models.loading import load_adapter
    from streamvqa.models.published import build_published

    cache: dict = {}

    def get(family: str):
        if family not in cache:
            cache[family] = load_adapter(str(build_published(family, tmp_path_factory.mktemp(family))))
        return cache[family]

    return get


@pytest.mark.parametrize("family", QWEN)
def test_published_facts_reach_the_adapter(published, family):
    a = published(family)
    facts = PUBLISHED[family]
    cfg = a.model.config
    assert a.head_dim == facts["head_dim"]
    assert a.rotary.mrope_section == facts["text"]["rope_parameters"]["mrope_section"]
    assert (cfg.video_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id) == (
        QWEN_SPECIALS["<|video_pad|>"], QWEN_SPECIALS["<|vision_start|>"], QWEN_SPECIALS["<|vision_end|>"])
    assert a.eos_ids >= {QWEN_SPECIALS["<|im_end|>"]}
    v = facts["vision"]
    assert (a.patch_size, a.merge, a.tps) == (v["patch_size"], v["spatial_merge_size"], v["temporal_patch_size"])
    if family == "qwen3_vl":
        assert a.deepstack == len(v["deepstack_visual_indexes"])


def _processor(cls, **attrs):
    """The family's processor class with only what placeholder expansion reads (its image and
    video processors need torchvision, absent here): its own replace/expand code runs."""
    p = cls.__new__(cls)
    p.__dict__.update(attrs)
    return p


def processor_ids(a, family: str, frames) -> list[int]:
    """apply_chat_template on the same inputs, expanded by the family's processor, tokenized."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLProcessor, Qwen3VLProcessor

    tok = a.tokenizer
    _, gh, gw = a.unit_grid(1)
    grid = [1, gh * a.merge, gw * a.merge]  # patches of one temporal patch (a padded frame)
    common = dict(video_processor=SimpleNamespace(merge_size=a.merge, temporal_patch_size=a.tps),
                  video_token="<|video_pad|>", vision_start_token="<|vision_start|>",
                  vision_end_token="<|vision_end|>")
    system = {"role": "system", "content": SYSTEM}
    question = {"type": "text", "text": Q + chat.ANSWER_STYLE}
    if family == "qwen3_vl":  # one video; each frame padded to a temporal patch (indices repeated)
        content = [{"type": "video"}, question]
        p = _processor(Qwen3VLProcessor, **common)
        meta = SimpleNamespace(fps=1.0, frames_indices=[int(t) for _, t in frames for _ in range(a.tps)])
        inputs = {"video_grid_thw": torch.tensor([[len(frames), grid[1], grid[2]]]), "video_metadata": [meta]}
        replacements = [p.replace_video_token(inputs, 0)]
    else:  # one video per unit behind its "[hh:mm:ss]", as the adapter lays units out
        content = []
        for _, t in frames:
            content += [{"type": "text", "text": chat.frame_open(t)}, {"type": "video"},
                        {"type": "text", "text": chat.FRAME_CLOSE}]
        content.append(question)
        p = _processor(Qwen2VLProcessor if family == "qwen2_vl" else Qwen2_5_VLProcessor, **common)
        inputs = {"video_grid_thw": torch.tensor([grid] * len(frames))}
        replacements = [p.replace_video_token(inputs, i) for i in range(len(frames))]
    text = tok.apply_chat_template([system, {"role": "user", "content": content}], tokenize=False,
                                   add_generation_prompt=True)
    (expanded,), _ = p.get_text_with_replacements([text], videos_replacements=replacements)
    return tok(expanded, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("family", IDEFICS)
def test_idefics_pieces_are_the_chat_template_and_processor_ids(published, family):
    """SmolVLM2-256M and Idefics3-8B: the whole stream (prefix, frames, question) is the published
    chat template over system + user turns (frames as images behind SmolVLM2's "\nFrame from mm:ss:"
    stamps), each image expanded by `Idefics3Processor` (unsplit: <fake><global-img> seq x <image>
    <fake>) and tokenized at once, at the published ids. Idefics3-8B has no <global-img> token."""
    from PIL import Image
    from transformers import Idefics3ImageProcessorPil, Idefics3Processor

    from streamvqa.models.idefics3 import ANSWER_STYLE, INTRO, SYSTEM, frame_time

    a = published(family)
    facts = PUBLISHED[family]
    seq = {"smolvlm": 64, "idefics3": 169}[family]
    assert a.head_dim == facts["head_dim"] and a.image_seq_len == seq
    assert a.image_id == facts["specials"]["<image>"]
    assert a.eos_ids >= {facts["specials"]["<end_of_utterance>"]}
    assert (a.tokenizer.convert_tokens_to_ids("<global-img>") == SMOLVLM_SPECIALS["<global-img>"]) == (
        family == "smolvlm")
    frames = make_frames(3, seed=3)
    ours = a.reference_inputs(frames, Q)["input_ids"][0].tolist()
    pieces = stream_pieces(a, frames, Q)
    assert sum(s.n for p in pieces for s in p) == len(ours)

    content = [{"type": "text", "text": INTRO}]
    for _, t in frames:
        content += [{"type": "text", "text": f"\nFrame from {frame_time(t)}:"}, {"type": "image"}]
    content.append({"type": "text", "text": f"\n\n{Q}{ANSWER_STYLE}"})
    messages = [{"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
                {"role": "user", "content": content}]
    text = a.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    size = {"longest_edge": a.image_size}
    proc = Idefics3Processor(image_processor=Idefics3ImageProcessorPil(do_image_splitting=False, size=size,
                                                                       max_image_size=size),
                             tokenizer=a.tokenizer, image_seq_len=seq)
    out = proc(text=[text], images=[[Image.fromarray(f) for f, _ in frames]])
    assert ours == out["input_ids"][0]


def test_llava_onevision_video_blocks_are_the_processors(published):
    """LLaVA-OneVision-0.5B: a unit of n frames is the processor's video of n frames: n x 14 x 14
    pooled <video> tokens + 1 newline, at the published <video> id (151647)."""
    from transformers import LlavaOnevisionProcessor

    a = published("llava_onevision")
    assert a.head_dim == 64 and a.video_id == 151647 and a.frame_tokens == 196
    p = LlavaOnevisionProcessor.__new__(LlavaOnevisionProcessor)
    p.__dict__.update(num_image_tokens=27 * 27, video_token="<video>")
    for n in (1, 2, 3):
        expected = p.replace_video_token({"pixel_values_videos": [torch.zeros(n, 3, 384, 384)]}, 0)
        ref = a.reference_inputs(make_frames(n, seed=4), Q, unit_frames=n)["input_ids"][0]
        assert int((ref == a.video_id).sum()) == expected.count("<video>") == n * 196 + 1


@pytest.mark.parametrize("family", QWEN)
def test_pieces_are_the_chat_template_and_processor_ids(published, family):
    a = published(family)
    frames = make_frames(3, seed=1)
    ours = a.reference_inputs(frames, Q)["input_ids"][0].tolist()
    pieces = stream_pieces(a, frames, Q)
    assert sum(s.n for p in pieces for s in p) == len(ours)
    assert ours == processor_ids(a, family, frames)


@pytest.mark.parametrize("family", list(PUBLISHED))
def test_published_shape_is_exact(published, family):
    """Tracker positions == get_rope_index, our embeddings + positions == the model's own path,
    and piece-by-piece prefill == one forward, at the published head size and rotary sections."""
    a = published(family)
    frames = make_frames(3, seed=2)
    pieces = stream_pieces(a, frames, Q)
    tr = a.new_positions()
    pos = torch.cat([tr.place(p) for p in pieces], dim=1)
    ref = a.reference_inputs(frames, Q)
    if tr.rows == 3:
        kw = {k: ref[k] for k in ("second_per_grid_ts",) if k in ref}
        theirs, _ = a.model.model.get_rope_index(ref["input_ids"], mm_token_type_ids=ref["mm_token_type_ids"],
                                                 video_grid_thw=ref["video_grid_thw"],
                                                 attention_mask=ref["attention_mask"], **kw)
        assert torch.equal(pos, theirs[:, 0])
        a.model.model.rope_deltas = None
    one = a.forward(torch.cat([a.embed(p) for p in pieces], dim=1), pos, DynamicCache(config=a.model.config))
    assert (one - a.model(**ref).logits).abs().max().item() < 1e-4
    tr2, cache = a.new_positions(), DynamicCache(config=a.model.config)
    chunks = torch.cat([a.forward(a.embed(p), tr2.place(p), cache) for p in pieces], dim=1)
    assert (chunks - one).abs().max().item() < 1e-4
