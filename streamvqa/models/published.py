"""Test models shaped like the published checkpoints, reduced to run on a CPU: Qwen3-VL-2B,
Qwen2.5-VL-3B and Qwen2-VL-2B (Instruct), LLaVA-OneVision-Qwen2-0.5B, SmolVLM2-256M-Video-Instruct,
Idefics3-8B-Llama3.

Each entry keeps what the adapters depend on, as the checkpoints' public configuration cards
give it: special-token ids, attention head size and KV grouping, rotary sections and theta,
patch / merge / temporal patch sizes, DeepStack count, the chat template's structure. Only layer
counts and widths (hidden, MLP, vision width) are reduced. Written here from those public facts
(docs/models.md lists the sources); no file of the checkpoints is copied or needed.

The tokenizer is the offline byte-level BPE of `tokenizer.py` with the specials placed at their
published ids (the rest of the vocabulary is padding), so token *ids* of the template's special
tokens are the real ones while ordinary text is tokenized by the small BPE.
"""

from __future__ import annotations

from pathlib import Path

import torch

# Qwen2-VL / Qwen2.5-VL / Qwen3-VL share the Qwen2 tokenizer's specials (ids from 151643).
QWEN_SPECIALS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|object_ref_start|>": 151646,
    "<|object_ref_end|>": 151647,
    "<|box_start|>": 151648,
    "<|box_end|>": 151649,
    "<|quad_start|>": 151650,
    "<|quad_end|>": 151651,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
}
QWEN_VOCAB = 151936
# SmolVLM2 (SmolLM2 tokenizer + Idefics3 image tokens): ChatML ids at the start, image ids after 49152.
SMOLVLM_SPECIALS = {
    "<|endoftext|>": 0,
    "<|im_start|>": 1,
    "<|im_end|>": 2,
    "<global-img>": 49152,
    **{f"<row_{r}_col_{c}>": 49152 + 6 * (r - 1) + c for r in range(1, 7) for c in range(1, 7)},
    "<fake_token_around_image>": 49189,
    "<image>": 49190,
    "<end_of_utterance>": 49279,
}
# Idefics3-8B-Llama3: the Llama 3 specials, and three tokens appended after them (vocabulary 128259).
IDEFICS3_SPECIALS = {
    "<|begin_of_text|>": 128000,
    "<|end_of_text|>": 128001,
    "<|reserved_special_token_0|>": 128002,
    "<fake_token_around_image>": 128256,
    "<image>": 128257,
    "<end_of_utterance>": 128258,
}

# ChatML; a list content is rendered item by item: an image or video as its vision block, text as
# is. Qwen2-VL / 2.5-VL add a default system turn when the first message is not one; Qwen3-VL
# (Instruct) does not.
_QWEN_CONTENT = (
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{%- else %}{%- for c in message['content'] %}"
    "{%- if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{%- elif c['type'] == 'text' %}{{ c['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
)
QWEN2_VL_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n" + _QWEN_CONTENT + "<|im_end|>\n"
    "{% endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN3_VL_TEMPLATE = (
    "{%- for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n" + _QWEN_CONTENT + "<|im_end|>\n"
    "{% endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# The Idefics chat (Idefics2/3, SmolVLM/SmolVLM2): BOS once, then per message the capitalised role,
# ":" when the content opens with an image and ": " otherwise, the items (an image as `<image>`, which
# the processor expands), `<end_of_utterance>\n`; the generation prompt is "Assistant:".
_IDEFICS_MESSAGES = (
    "{%- for message in messages %}{{ message['role'] | capitalize }}"
    "{%- if message['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
    "{%- for c in message['content'] %}"
    "{%- if c['type'] == 'text' %}{{ c['text'] }}{%- elif c['type'] == 'image' %}<image>{%- endif %}"
    "{%- endfor %}<end_of_utterance>\n{% endfor %}"
    "{%- if add_generation_prompt %}Assistant:{% endif %}"
)
SMOLVLM2_TEMPLATE = "<|im_start|>" + _IDEFICS_MESSAGES
IDEFICS3_TEMPLATE = "<|begin_of_text|>" + _IDEFICS_MESSAGES

# Published configuration facts (reduced_config scales layers and widths down).
PUBLISHED = {
    "qwen3_vl": {
        "specials": QWEN_SPECIALS,
        "eos": "<|im_end|>",
        "pad": "<|endoftext|>",
        "checkpoint": "Qwen/Qwen3-VL-2B-Instruct",
        "template": QWEN3_VL_TEMPLATE,
        "frame": [64, 96],
        "head_dim": 128,
        "text": dict(
            head_dim=128,
            num_attention_heads=16,
            num_key_value_heads=8,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 5e6,
                "mrope_section": [24, 20, 20],
                "mrope_interleaved": True,
            },
            vocab_size=QWEN_VOCAB,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
        ),
        "vision": dict(
            patch_size=16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            num_heads=16,
            num_position_embeddings=2304,
            deepstack_visual_indexes=[5, 11, 17],  # of 24 blocks
        ),
    },
    "qwen2_5_vl": {
        "specials": QWEN_SPECIALS,
        "eos": "<|im_end|>",
        "pad": "<|endoftext|>",
        "checkpoint": "Qwen/Qwen2.5-VL-3B-Instruct",
        "template": QWEN2_VL_TEMPLATE,
        "frame": [56, 84],
        "head_dim": 128,  # hidden_size / num_attention_heads in this family
        "text": dict(
            num_attention_heads=16,
            num_key_value_heads=2,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
            vocab_size=QWEN_VOCAB,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
        ),
        "vision": dict(
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            num_heads=16,
            window_size=112,
            fullatt_block_indexes=[7, 15, 23, 31],  # of 32 blocks
            tokens_per_second=2,
        ),
    },
    "qwen2_vl": {
        "specials": QWEN_SPECIALS,
        "eos": "<|im_end|>",
        "pad": "<|endoftext|>",
        "checkpoint": "Qwen/Qwen2-VL-2B-Instruct",
        "template": QWEN2_VL_TEMPLATE,
        "frame": [56, 84],
        "head_dim": 128,  # 1536 / 12
        "text": dict(
            num_attention_heads=12,
            num_key_value_heads=2,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
            vocab_size=QWEN_VOCAB,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
        ),
        "vision": dict(patch_size=14, spatial_merge_size=2, temporal_patch_size=2, num_heads=16, mlp_ratio=4),
    },
    "llava_onevision": {
        "checkpoint": "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
        "specials": {**{k: v for k, v in QWEN_SPECIALS.items() if v <= 151645}, "<image>": 151646, "<video>": 151647},
        "eos": "<|im_end|>",
        "pad": "<|endoftext|>",
        "template": None,  # images, then videos ("<video>\n"), then texts: no interleaved timestamps
        "head_dim": 64,  # Qwen2-0.5B: 896 / 14
        "text": dict(
            model_type="qwen2",
            num_attention_heads=14,
            num_key_value_heads=2,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6},
            vocab_size=152000,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
        ),
        # SigLIP so400m/14 at 384 px: 27 x 27 patches, pooled 2x in a video -> 14 x 14 per frame
        "vision": dict(model_type="siglip_vision_model", image_size=384, patch_size=14, num_attention_heads=16),
    },
    "smolvlm": {
        "checkpoint": "HuggingFaceTB/SmolVLM2-256M-Video-Instruct",
        "specials": SMOLVLM_SPECIALS,
        "eos": "<end_of_utterance>",
        "pad": "<|im_end|>",
        "bos": "<|im_start|>",
        "template": SMOLVLM2_TEMPLATE,
        "head_dim": 64,
        "text": dict(
            model_type="llama",
            head_dim=64,
            num_attention_heads=9,
            num_key_value_heads=3,
            rope_parameters={"rope_type": "default", "rope_theta": 1e5},
            vocab_size=49280,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
        ),
        "vision": dict(image_size=512, patch_size=16, num_attention_heads=12),
        "scale_factor": 4,  # 64 image tokens per frame
    },
    "idefics3": {
        "checkpoint": "HuggingFaceM4/Idefics3-8B-Llama3",
        "specials": IDEFICS3_SPECIALS,
        "eos": "<end_of_utterance>",
        "pad": "<|reserved_special_token_0|>",
        "bos": "<|begin_of_text|>",
        "template": IDEFICS3_TEMPLATE,
        "head_dim": 128,  # Llama 3 8B: 4096 / 32, 8 KV heads
        "text": dict(
            model_type="llama",
            head_dim=128,
            num_attention_heads=32,
            num_key_value_heads=8,
            rope_parameters={"rope_type": "default", "rope_theta": 5e5},
            vocab_size=128259,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
        ),
        # SigLIP so400m/14 at 364 px: 26 x 26 patches, pixel shuffle 2 -> 169 image tokens
        "vision": dict(image_size=364, patch_size=14, num_attention_heads=16),
        "scale_factor": 2,
    },
}
FAMILIES = tuple(PUBLISHED)


def published_tokenizer(family: str):
    """The offline BPE with the family's specials at their published ids and its chat template."""
    import json

    from tokenizers import Tokenizer
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    from streamvqa.models.tokenizer import build_tokenizer

    facts = PUBLISHED[family]
    small = json.loads(build_tokenizer().backend_tokenizer.to_str())
    specials = facts["specials"]
    bpe = [t for t, _ in sorted(small["model"]["vocab"].items(), key=lambda x: x[1]) if t not in small_specials(small)]
    # specials at their ids, BPE tokens in the lowest free ids, unreachable padding up to the last special
    vocab = dict(specials)
    free = (i for i in range(max(specials.values()) + 1) if i not in set(specials.values()))
    vocab.update(zip(bpe, free, strict=False))
    vocab.update({f"<|pad{k}|>": k for k in free})
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in small["model"]["merges"]]
    tok = Tokenizer(BPE(vocab, merges))
    base = Tokenizer.from_str(json.dumps(small))
    tok.pre_tokenizer, tok.decoder = base.pre_tokenizer, base.decoder
    tok.add_special_tokens(sorted(specials, key=specials.get))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=facts["eos"], pad_token=facts["pad"],
                                 bos_token=facts.get("bos"))
    hf.chat_template = facts["template"]
    assert all(hf.convert_tokens_to_ids(s) == i for s, i in specials.items())
    return hf


def small_specials(tokenizer_json: dict) -> set[str]:
    return {t["content"] for t in tokenizer_json.get("added_tokens", [])}


def reduced_config(family: str):
    """The published configuration with layers and widths reduced: 2 query heads and 1 KV head
    of the published head size; rotary sections and theta, vision geometry and ids unchanged."""
    facts = PUBLISHED[family]
    text = dict(facts["text"])
    text.update(
        num_attention_heads=2,
        num_key_value_heads=1,
        hidden_size=2 * facts["head_dim"],
        intermediate_size=256,
        num_hidden_layers=4,
        max_position_embeddings=32768,
        eos_token_id=facts["specials"][facts["eos"]],
        pad_token_id=facts["specials"][facts["pad"]],
        bos_token_id=None,
    )
    vision = dict(facts["vision"])
    vision_heads = 2
    if family == "llava_onevision":
        from transformers import LlavaOnevisionConfig

        vision.update(num_attention_heads=vision_heads, hidden_size=64, intermediate_size=128, num_hidden_layers=2)
        size = vision["image_size"]
        return LlavaOnevisionConfig(
            text_config=text, vision_config=vision, image_token_index=facts["specials"]["<image>"],
            video_token_index=facts["specials"]["<video>"], vision_feature_layer=-1,
            vision_feature_select_strategy="full", image_grid_pinpoints=[[size, size]],
            tie_word_embeddings=text["tie_word_embeddings"],
        )
    if family in ("smolvlm", "idefics3"):
        from transformers import Idefics3Config, SmolVLMConfig

        vision.update(num_attention_heads=vision_heads, hidden_size=64, intermediate_size=128, num_hidden_layers=2)
        cls = SmolVLMConfig if family == "smolvlm" else Idefics3Config
        return cls(text_config=text, vision_config=vision, image_token_id=facts["specials"]["<image>"],
                             scale_factor=facts["scale_factor"], tie_word_embeddings=text["tie_word_embeddings"])
    ids = dict(
        image_token_id=QWEN_SPECIALS["<|image_pad|>"],
        video_token_id=QWEN_SPECIALS["<|video_pad|>"],
        vision_start_token_id=QWEN_SPECIALS["<|vision_start|>"],
        vision_end_token_id=QWEN_SPECIALS["<|vision_end|>"],
        tie_word_embeddings=text["tie_word_embeddings"],
    )
    if family == "qwen3_vl":
        from transformers import Qwen3VLConfig

        vision.update(
            depth=4, deepstack_visual_indexes=[1, 2, 3], num_heads=vision_heads, hidden_size=64,
            intermediate_size=128, out_hidden_size=text["hidden_size"],
        )
        cfg = Qwen3VLConfig(text_config=text, vision_config=vision, **ids)
    elif family == "qwen2_vl":
        from transformers import Qwen2VLConfig

        vision.update(depth=4, num_heads=vision_heads, embed_dim=64, hidden_size=text["hidden_size"])
        cfg = Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
    else:
        from transformers import Qwen2_5_VLConfig

        vision.update(
            depth=4, fullatt_block_indexes=[1, 3], num_heads=vision_heads, hidden_size=64,
            intermediate_size=128, out_hidden_size=text["hidden_size"],
        )
        cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
    cfg.streamvqa_frame_size = list(facts["frame"])
    return cfg


def build_published(family: str, out_dir: Path, seed: int = 0) -> Path:
    """Save a reduced published-shape model and its tokenizer to `out_dir` (HF format)."""
    from transformers import AutoModelForImageTextToText

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(reduced_config(family)).eval()
    model.save_pretrained(out_dir)
    published_tokenizer(family).save_pretrained(out_dir)
    return out_dir
