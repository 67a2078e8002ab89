"""The grounded vision tower and its "words" connector.

A tiny BatchNorm CNN (three stride-2 convolutions, 64x64 input, an 8x8 grid) feeds a linear
*scene-parse* head: for each of five positions (left, right, top, bottom, centre) a colour and a
shape (each with a "nothing" option), plus the digit shown (or none) and the object count.
The connector turns each prediction into a softmax-weighted mixture of word embeddings
(tables initialised from the frozen LM's embeddings of the attribute words, then trained) and
lays them out in a compact caption the language model reads, 11 tokens per frame::

    <count> <digit> <colour> <shape> <place> <colour> <shape> <place> <colour> <shape> <place>

The three object slots hold the occupied positions (head: P(shape != nothing) > 0.5, at most
three, in the fixed order left, right, top, bottom, centre); unused slots read
"nothing nothing nothing". E.g. " two none red circle left blue star top nothing nothing nothing".
A trainable soft prompt (initialised from the LM's embeddings of `PROMPT_TEXT`) follows the
system prompt once per stream and tells the LM how to read the lines.
Only what we train is saved: the tower, the head, the small word tables and the soft prompt
(never the LM's 49152 x 576 embedding table), and low-rank adapters on the LM's attention when
training used them (`lora.py`; `DefaultAdapter` merges them into its own copy of the LM).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from streamvqa.models.grounded.lora import LoRA

WEIGHTS_NAME = "grounded-v6.safetensors"

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
SHAPES = ("circle", "square", "triangle", "star", "cross")
POSITIONS = ("left", "right", "top", "bottom", "centre")
COUNT_WORDS = ("zero", "one", "two", "three")
DIGITS = tuple(str(d) for d in range(10))
NOTHING = "nothing"
NO_DIGIT = "none"
PROMPT_TEXT = " Each line is one video frame: object count, digit, then colour, shape and place of each object.\n"


def default_weights_path() -> Path:
    """Where the committed trained weights live."""
    return Path(__file__).resolve().parent / "weights" / WEIGHTS_NAME


def sha256_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def config_path(path: Path) -> Path:
    return path.with_suffix(".json")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class GroundedVisionConfig:
    """Vocabulary and geometry of the tower. Word lists define the head's classes."""

    image_size: int = 64
    channels: tuple[int, int, int] = (32, 64, 128)
    colours: tuple[str, ...] = COLOURS
    shapes: tuple[str, ...] = SHAPES
    positions: tuple[str, ...] = POSITIONS
    count_words: tuple[str, ...] = COUNT_WORDS
    digits: tuple[str, ...] = DIGITS
    nothing: str = NOTHING
    no_digit: str = NO_DIGIT
    n_slots: int = 3
    prompt_text: str = PROMPT_TEXT
    lora_alpha: float = 16.0  # scale of the LM adapters, if the weights hold any (lora.py)
    extra: dict = field(default_factory=dict)

    @property
    def colour_classes(self) -> tuple[str, ...]:
        return (self.nothing, *self.colours)

    @property
    def shape_classes(self) -> tuple[str, ...]:
        return (self.nothing, *self.shapes)

    @property
    def digit_classes(self) -> tuple[str, ...]:
        return (self.no_digit, *self.digits)

    @property
    def place_classes(self) -> tuple[str, ...]:
        return (*self.positions, self.nothing)

    @property
    def n_tokens(self) -> int:
        return 2 + 3 * self.n_slots

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> GroundedVisionConfig:
        d = json.loads(text)
        for k in ("channels", "colours", "shapes", "positions", "count_words", "digits"):
            d[k] = tuple(d[k])
        return cls(**d)


@dataclass
class SceneParse:
    """Head logits: per-position colour/shape [B, P, C] / [B, P, S], digit [B, D], count [B, N]."""

    colour: torch.Tensor
    shape: torch.Tensor
    digit: torch.Tensor
    count: torch.Tensor


def word_init(words: tuple[str, ...], lm_embedding: nn.Embedding, tokenizer) -> torch.Tensor:
    """Initial rows: the LM embedding of each word's last token when written after a space."""
    rows = []
    for w in words:
        ids = tokenizer(" " + w, add_special_tokens=False)["input_ids"]
        rows.append(lm_embedding.weight[ids[-1]].detach().float().clone())
    return torch.stack(rows)


def text_init(text: str, lm_embedding: nn.Embedding, tokenizer) -> torch.Tensor:
    """The LM embeddings of all tokens of `text` (the soft prompt's starting point)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return lm_embedding.weight[torch.as_tensor(ids, dtype=torch.long)].detach().float().clone()


class Tower(nn.Module):
    """Three stride-2 conv + BatchNorm + ReLU layers: [B, 3, S, S] -> [B, C, S/8, S/8]."""

    def __init__(self, channels: tuple[int, int, int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
            c_in = c
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class GroundedVision(nn.Module):
    """Frames -> caption-like visual tokens for the frozen LM (see module docstring)."""

    def __init__(self, config: GroundedVisionConfig, lm_embedding: nn.Embedding, tokenizer) -> None:
        super().__init__()
        self.config = config
        self.image_size = config.image_size
        self.n_tokens = config.n_tokens
        self.hidden = int(lm_embedding.weight.shape[1])
        self.tower = Tower(config.channels)
        grid = config.image_size // 8
        self.n_pos = len(config.positions)
        self.n_colour = len(config.colour_classes)
        self.n_shape = len(config.shape_classes)
        self.n_digit = len(config.digit_classes)
        self.n_count = len(config.count_words)
        n_out = self.n_pos * (self.n_colour + self.n_shape) + self.n_digit + self.n_count
        self.head = nn.Linear(config.channels[-1] * grid * grid, n_out)
        self.colour_words = nn.Parameter(word_init(config.colour_classes, lm_embedding, tokenizer))
        self.shape_words = nn.Parameter(word_init(config.shape_classes, lm_embedding, tokenizer))
        self.digit_words = nn.Parameter(word_init(config.digit_classes, lm_embedding, tokenizer))
        self.count_words = nn.Parameter(word_init(config.count_words, lm_embedding, tokenizer))
        self.position_words = nn.Parameter(word_init(config.place_classes, lm_embedding, tokenizer))
        self.prompt = nn.Parameter(text_init(config.prompt_text, lm_embedding, tokenizer))
        self.lora: LoRA | None = None  # adapters on the LM's attention, trained in stage 2 if asked for
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1), persistent=False)

    # -- vision ---------------------------------------------------------------------------
    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] RGB -> normalised float [B, 3, S, S]."""
        if frames.dim() != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be [B, H, W, 3], got {tuple(frames.shape)}")
        x = frames.to(self.mean.device).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True,
                              align_corners=False)
        return (x - self.mean) / self.std

    def parse(self, frames: torch.Tensor) -> SceneParse:
        """Head logits for uint8 frames [B, H, W, 3]."""
        z = self.head(self.tower(self.preprocess(frames)).flatten(1))
        b, p = z.shape[0], self.n_pos
        i = 0
        colour = z[:, i:i + p * self.n_colour].view(b, p, self.n_colour)
        i += p * self.n_colour
        shape = z[:, i:i + p * self.n_shape].view(b, p, self.n_shape)
        i += p * self.n_shape
        digit = z[:, i:i + self.n_digit]
        i += self.n_digit
        count = z[:, i:i + self.n_count]
        return SceneParse(colour=colour, shape=shape, digit=digit, count=count)

    # -- connector ------------------------------------------------------------------------
    def slots(self, parse: SceneParse) -> tuple[torch.Tensor, torch.Tensor]:
        """Which position fills each object slot: index [B, n_slots] into positions, and whether
        the slot is used [B, n_slots] (unused slots come last)."""
        occ = 1.0 - parse.shape.softmax(-1)[..., 0]  # [B, P] P(something at the position)
        k = min(self.config.n_slots, self.n_pos)
        top = occ.topk(k, dim=-1).indices  # most confident positions
        used = occ.gather(1, top) > 0.5
        key = torch.where(used, top, top + self.n_pos)  # used ones first, in position order
        order = key.sort(dim=-1).indices
        idx, used = top.gather(1, order), used.gather(1, order)
        if k < self.config.n_slots:  # fewer positions than slots: pad with unused
            pad = self.config.n_slots - k
            idx = torch.cat([idx, idx.new_zeros(idx.shape[0], pad)], 1)
            used = torch.cat([used, used.new_zeros(used.shape[0], pad)], 1)
        return idx, used

    def words(self, parse: SceneParse) -> torch.Tensor:
        """Softmax-weighted word embeddings laid out as the caption: [B, n_tokens, hidden]."""
        b = parse.digit.shape[0]
        count = parse.count.softmax(-1) @ self.count_words  # [B, H]
        digit = parse.digit.softmax(-1) @ self.digit_words
        colour = parse.colour.softmax(-1) @ self.colour_words  # [B, P, H]
        shape = parse.shape.softmax(-1) @ self.shape_words
        idx, used = self.slots(parse)
        g = idx.unsqueeze(-1).expand(-1, -1, self.hidden)
        u = used.unsqueeze(-1)
        s_colour = torch.where(u, colour.gather(1, g), self.colour_words[0])
        s_shape = torch.where(u, shape.gather(1, g), self.shape_words[0])
        s_place = torch.where(u, self.position_words[idx], self.position_words[self.n_pos])
        slots = torch.stack([s_colour, s_shape, s_place], dim=2).reshape(b, -1, self.hidden)
        return torch.cat([count.unsqueeze(1), digit.unsqueeze(1), slots], dim=1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] RGB frames (any H, W) -> visual tokens [B, n_tokens, hidden]."""
        return self.words(self.parse(frames))

    @torch.no_grad()
    def describe(self, frames: torch.Tensor) -> list[str]:
        """The argmax caption of each frame, for debugging and readable tests."""
        p = self.parse(frames)
        idx, used = self.slots(p)
        c = self.config
        out = []
        for i in range(p.digit.shape[0]):
            parts = [c.count_words[int(p.count[i].argmax())], c.digit_classes[int(p.digit[i].argmax())]]
            for j, ok in zip(idx[i].tolist(), used[i].tolist(), strict=True):
                if ok:
                    parts += [c.colour_classes[int(p.colour[i, j].argmax())],
                              c.shape_classes[int(p.shape[i, j].argmax())], c.positions[j]]
                else:
                    parts += [c.nothing] * 3
            out.append(" ".join(parts))
        return out

    # -- persistence ----------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write safetensors weights, `<name>.sha256` beside them and the config as `.json`."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(path), metadata={"format": "pt", "model": "streamvqa-" + path.stem})
        sha256_path(path).write_text(f"{file_sha256(path)}  {path.name}\n")
        config_path(path).write_text(self.config.to_json() + "\n")

    @classmethod
    def load(cls, path: Path, lm_embedding: nn.Embedding, tokenizer) -> GroundedVision:
        """Load weights saved by `save`, after verifying the sha256 file beside them."""
        from safetensors.torch import load_file

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"grounded vision weights not found: {path}")
        sums = sha256_path(path)
        if not sums.exists():
            raise ValueError(f"checksum file missing: {sums}")
        expected = sums.read_text().split()[0].strip().lower()
        actual = file_sha256(path)
        if actual != expected:
            raise ValueError(f"checksum mismatch for {path.name}: expected {expected}, got {actual}")
        cfg_file = config_path(path)
        config = GroundedVisionConfig.from_json(cfg_file.read_text()) if cfg_file.exists() else GroundedVisionConfig()
        model = cls(config, lm_embedding, tokenizer)
        state = load_file(str(path))
        if any(k.startswith("lora.") for k in state):
            model.lora = LoRA.from_state(state, config.lora_alpha)
        model.load_state_dict(state)
        model.eval()
        return model
