"""Image preprocessing with torch and PIL only (torchvision does not import beside torch 2.13).

Frames are HxWx3 uint8 RGB arrays of any size; each family resizes them to its own input size.
The Qwen patchify mirrors `Qwen2VLVideoProcessor` (models.md appendix B) so video pixels match
what the model was trained on without the torchvision-only video processor.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)


def norm_stats(path: Path | None, default_mean, default_std) -> tuple[tuple, tuple]:
    """Mean and std from a checkpoint's preprocessor_config.json when it has one (real models)."""
    cfg = Path(path) / "preprocessor_config.json" if path is not None else None
    if cfg is not None and cfg.exists():
        d = json.loads(cfg.read_text())
        return tuple(d.get("image_mean", default_mean)), tuple(d.get("image_std", default_std))
    return tuple(default_mean), tuple(default_std)


def to_pixels(frame: np.ndarray, height: int, width: int, mean, std) -> torch.Tensor:
    """Resize (bicubic) to height x width, rescale to [0, 1] and normalise: float32 [3, H, W]."""
    frame = np.ascontiguousarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB frame, got {frame.shape} {frame.dtype}")
    if frame.shape[:2] != (height, width):
        frame = np.asarray(Image.fromarray(frame).resize((width, height), Image.BICUBIC))
    x = torch.from_numpy(np.array(frame, dtype=np.float32)).permute(2, 0, 1) / 255.0
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (x - m) / s


def qwen_patchify(
    frames: torch.Tensor, patch_size: int, merge_size: int, temporal_patch_size: int
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """[T, C, H, W] normalised frames -> (flattened patches [gt*gh*gw, C*tps*ps*ps], (gt, gh, gw)).

    T is padded to a multiple of the temporal patch size by repeating the last frame, as the
    Qwen video processor does; H and W must be multiples of patch_size * merge_size.
    """
    t, c, h, w = frames.shape
    ps, ms, tps = patch_size, merge_size, temporal_patch_size
    if h % (ps * ms) or w % (ps * ms):
        raise ValueError(f"frame size {h}x{w} is not a multiple of {ps * ms}")
    if pad := -t % tps:
        frames = torch.cat([frames, frames[-1:].expand(pad, -1, -1, -1)], dim=0)
        t += pad
    gt, gh, gw = t // tps, h // ps, w // ps
    p = frames.reshape(gt, tps, c, gh // ms, ms, ps, gw // ms, ms, ps).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return p.reshape(gt * gh * gw, c * tps * ps * ps), (gt, gh, gw)


# -- shared layout and loading of the Hugging Face VLM adapters ------------------------------------
# (kept here, beside the pixel code, so the three family modules stay small)


def load_local(path: Path, device: str, dtype: torch.dtype):
    """Model and tokenizer from a local Hugging Face directory, never touching a hub
    (local_files_only; the process's hub setting is left alone so a model id can be resolved)."""
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} is not a Hugging Face model directory (no config.json)")
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, local_files_only=True)
    model = model.to(device).eval()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tok


def eos_ids_of(model, tok) -> set[int]:
    """Every id that ends an answer: the tokenizer's eos, ChatML's <|im_end|>, the configs' eos."""
    out: set[int] = set()

    def add(x) -> None:
        if x is None:
            return
        for i in x if isinstance(x, (list, tuple, set)) else [x]:
            if i is not None and int(i) >= 0:
                out.add(int(i))

    add(tok.eos_token_id)
    for s in ("<|im_end|>", "<end_of_utterance>"):
        i = tok.convert_tokens_to_ids(s)
        if isinstance(i, int) and i != tok.unk_token_id:
            add(i)
    cfg = model.config
    add(getattr(getattr(cfg, "text_config", cfg), "eos_token_id", None))
    gen = getattr(model, "generation_config", None)
    add(getattr(gen, "eos_token_id", None))
    return out


def group_units(
    frames: list[tuple[np.ndarray, float]], unit_frames: int
) -> list[tuple[list[np.ndarray], float]]:
    """Consecutive frames in units of `unit_frames`; a unit's time is its first frame's."""
    if unit_frames < 1:
        raise ValueError("unit_frames must be >= 1")
    return [
        ([f for f, _ in frames[i : i + unit_frames]], float(frames[i][1]))
        for i in range(0, len(frames), unit_frames)
    ]
