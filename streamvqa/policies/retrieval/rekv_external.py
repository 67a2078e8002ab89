"""ReKV external retrieval (Di et al., ICLR 2025, arXiv 2503.00540, Table 5 "external").

Frames and the question are embedded by an image-text encoder (the paper: SigLIP-so400m) and
blocks are ranked by the cosine of their frames' mean embedding to the question's; the same
blocks serve every layer. The authors never released this retriever (their issue #4), so this is
the paper's description with their default size (64 blocks).

The encoder is a CLIP or SigLIP model in Hugging Face format in a local directory the user
configures (option `encoder_dir`, or the `STREAMVQA_ENCODER_DIR` environment variable); nothing
is downloaded. Without one the method is refused when it is resolved, with the stable code
`encoder_not_configured` (or `encoder_unavailable` when the directory holds no such model).
Frames are embedded as they are written (`observe`), so the question pays one text forward.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from streamvqa.policies.retrieval.base import RetrievalContext, Retriever, RetrieverUnavailable, TopKOptions
from streamvqa.store.block import Block

ENV = "STREAMVQA_ENCODER_DIR"
FAMILIES = ("clip", "siglip", "siglip2")
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def encoder_path(encoder_dir: str | None) -> Path:
    """The configured encoder directory, checked; RetrieverUnavailable otherwise."""
    where = encoder_dir or os.environ.get(ENV)
    if not where:
        raise RetrieverUnavailable(
            "encoder_not_configured",
            f"rekv-external needs a local CLIP/SigLIP directory: set the option encoder_dir or {ENV}",
        )
    path = Path(where)
    config = path / "config.json"
    model_type = json.loads(config.read_text()).get("model_type", "") if config.is_file() else ""
    if model_type not in FAMILIES:
        raise RetrieverUnavailable(
            "encoder_unavailable", f"no CLIP/SigLIP model at {path} (config.json model_type {model_type!r})"
        )
    return path


class ExternalOptions(TopKOptions):
    encoder_dir: str | None = None  # local CLIP/SigLIP directory (or STREAMVQA_ENCODER_DIR)


def check_encoder(options: ExternalOptions) -> None:
    encoder_path(options.encoder_dir)


class ImageTextEncoder:
    """A CLIP/SigLIP model from a local directory: L2-normalised frame and text embeddings."""

    def __init__(self, path: Path) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.model = AutoModel.from_pretrained(path).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.siglip = self.model.config.model_type.startswith("siglip")
        self.size = int(self.model.config.vision_config.image_size)
        pre = path / "preprocessor_config.json"
        pc = json.loads(pre.read_text()) if pre.is_file() else {}
        default = ((0.5,) * 3, (0.5,) * 3) if self.siglip else (CLIP_MEAN, CLIP_STD)
        self.mean = torch.tensor(pc.get("image_mean", default[0])).view(1, 3, 1, 1)
        self.std = torch.tensor(pc.get("image_std", default[1])).view(1, 3, 1, 1)

    @staticmethod
    def _features(out) -> torch.Tensor:
        return out if isinstance(out, torch.Tensor) else out.pooler_output  # transformers 5 returns outputs

    @torch.inference_mode()
    def images(self, frames: list[np.ndarray]) -> torch.Tensor:
        x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        x = (x - self.mean) / self.std
        return F.normalize(self._features(self.model.get_image_features(pixel_values=x)).float(), dim=-1)

    @torch.inference_mode()
    def text(self, text: str) -> torch.Tensor:
        # SigLIP was trained on max-length padded text; CLIP pools at the end-of-text token
        kw = {"padding": "max_length", "max_length": 64, "truncation": True} if self.siglip else {"truncation": True}
        t = self.tokenizer([text], return_tensors="pt", **kw)
        out = self.model.get_text_features(**{k: v for k, v in t.items() if k in ("input_ids", "attention_mask")})
        return F.normalize(self._features(out).float(), dim=-1)[0]


_encoders: dict[Path, ImageTextEncoder] = {}
_lock = threading.Lock()


def load_encoder(path: Path) -> ImageTextEncoder:
    """One encoder per directory, shared by every stream."""
    with _lock:
        if path not in _encoders:
            _encoders[path] = ImageTextEncoder(path)
        return _encoders[path]


class ReKVExternalRetriever(Retriever):
    per_layer = False  # one ranking for every layer
    Options = ExternalOptions

    def __init__(
        self, encoder_dir: str | None = None, topk: int | None = 64, score_mass: float | None = None,
        min_blocks: int = 1, encoder: ImageTextEncoder | None = None,
    ) -> None:
        super().__init__(topk, score_mass, min_blocks)
        self.encoder = encoder or load_encoder(encoder_path(encoder_dir).resolve())
        self.frames: dict[int, torch.Tensor] = {}  # block index -> mean frame embedding

    def observe(self, block: Block, frames: list[np.ndarray] | None = None) -> None:
        if frames:
            self.frames[block.index] = F.normalize(self.encoder.images(frames).mean(0), dim=-1)

    def needs_query(self, n_blocks: int) -> bool:
        return False  # the question is embedded by the encoder, not run through the LM

    def score(self, ctx: RetrievalContext) -> torch.Tensor:
        q = self.encoder.text(ctx.question)
        known = [self.frames[b] @ q for b in ctx.block_ids if b in self.frames]
        floor = (min(known) - 1) if known else torch.tensor(0.0)  # blocks never embedded rank last
        row = torch.stack([self.frames[b] @ q if b in self.frames else floor for b in ctx.block_ids])
        return row.view(1, -1).expand(ctx.query.shape[0], -1)
