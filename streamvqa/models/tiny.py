"""Tiny random-weight models of every family, built offline, for tests (models.md §2.2).

`build_tiny` saves model and tokenizer to a directory in Hugging Face format, so tests load them
back through each adapter's `from_pretrained`: the same path a real checkpoint takes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from streamvqa.models.tokenizer import build_tokenizer

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava_onevision", "idefics3", "smolvlm")

# Qwen frames: 56 x 84 -> a 4 x 6 patch grid -> 2 x 3 = 6 LLM tokens per temporal patch (h != w on purpose).
QWEN_TINY_FRAME = [56, 84]
# Qwen3-VL patches are 16 px: 64 x 96 -> 4 x 6 patches -> 2 x 3 LLM tokens per temporal patch.
QWEN3_TINY_FRAME = [64, 96]


def _text(tok) -> dict:
    return dict(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        bos_token_id=None,
        tie_word_embeddings=False,
    )


def tiny_config(family: str, tok):
    """The tiny config of a family, with the special token ids of `tok`."""
    ids = tok.convert_tokens_to_ids
    text = _text(tok)
    if family in ("qwen2_vl", "qwen2_5_vl"):
        from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]}
        common = dict(
            text_config=text,
            image_token_id=ids("<|image_pad|>"),
            video_token_id=ids("<|video_pad|>"),
            vision_start_token_id=ids("<|vision_start|>"),
            vision_end_token_id=ids("<|vision_end|>"),
            tie_word_embeddings=False,
        )
        if family == "qwen2_vl":
            vision = dict(
                depth=1,
                embed_dim=32,
                hidden_size=64,
                num_heads=2,
                mlp_ratio=2,
                patch_size=14,
                spatial_merge_size=2,
                temporal_patch_size=2,
            )
            cfg = Qwen2VLConfig(vision_config=vision, **common)
        else:
            vision = dict(
                depth=1,
                hidden_size=32,
                intermediate_size=64,
                out_hidden_size=64,
                num_heads=2,
                patch_size=14,
                spatial_merge_size=2,
                temporal_patch_size=2,
                window_size=56,
                fullatt_block_indexes=[0],
                tokens_per_second=2,
            )
            cfg = Qwen2_5_VLConfig(vision_config=vision, **common)
        cfg.streamvqa_frame_size = list(QWEN_TINY_FRAME)
        return cfg
    if family == "qwen3_vl":
        from transformers import Qwen3VLConfig

        # head_dim 32 -> 16 rotary pairs, split T/H/W as the published [24, 20, 20] of 64 is;
        # three decoder layers, DeepStack into the first two (published: 3 of 28-36)
        text.update(num_hidden_layers=3, head_dim=32)
        text["rope_parameters"] = {
            "rope_type": "default",
            "rope_theta": 5e6,
            "mrope_section": [6, 5, 5],
            "mrope_interleaved": True,
        }
        vision = dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=64,
            patch_size=16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            num_position_embeddings=16,
            deepstack_visual_indexes=[0, 1],
        )
        cfg = Qwen3VLConfig(
            text_config=text,
            vision_config=vision,
            image_token_id=ids("<|image_pad|>"),
            video_token_id=ids("<|video_pad|>"),
            vision_start_token_id=ids("<|vision_start|>"),
            vision_end_token_id=ids("<|vision_end|>"),
            tie_word_embeddings=False,
        )
        cfg.streamvqa_frame_size = list(QWEN3_TINY_FRAME)
        return cfg
    if family == "llava_onevision":
        from transformers import LlavaOnevisionConfig

        return LlavaOnevisionConfig(
            text_config=dict(model_type="qwen2", **text),
            vision_config=dict(
                model_type="siglip_vision_model",
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=2,
                image_size=112,
                patch_size=14,
            ),
            image_token_index=ids("<image>"),
            video_token_index=ids("<video>"),
            vision_feature_layer=-1,
            vision_feature_select_strategy="full",
            image_grid_pinpoints=[[112, 112]],
            tie_word_embeddings=False,
        )
    if family in ("idefics3", "smolvlm"):
        from transformers import Idefics3Config, SmolVLMConfig

        cls = Idefics3Config if family == "idefics3" else SmolVLMConfig
        return cls(
            text_config=dict(model_type="llama", **text),
            vision_config=dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=2,
                image_size=64,
                patch_size=16,
            ),
            image_token_id=ids("<image>"),
            scale_factor=2,
            tie_word_embeddings=False,
        )
    raise ValueError(f"unknown family {family!r}; one of {FAMILIES}")


def tiny_model(family: str, tok, seed: int = 0):
    """Random-weight model of `family` (seeded), in eval mode."""
    from transformers import AutoModelForImageTextToText

    cfg = tiny_config(family, tok)
    torch.manual_seed(seed)
    return AutoModelForImageTextToText.from_config(cfg).eval()


def build_tiny(family: str, out_dir: Path, seed: int = 0) -> Path:
    """Build a tiny `family` model with an offline tokenizer and save both to `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    model = tiny_model(family, tok, seed)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir
