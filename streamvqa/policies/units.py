"""Stage 1: frames become units, the pieces of the stream the LLM encodes one at a time.

The base classes do the mechanics; a method's idea is a short subclass in its own file:

- `FixedUnits`: `unit_frames` frames per unit, encoded by the model as one multi-frame piece
  (ReKV, full, sliding-window, InfiniPot-V, LiveVLM, ReSV, rLiVS, ...).
- `FrameUnits`: every frame is its own timestamped piece, so a unit of them is exactly the token
  sequence the fixed path would encode; used when a policy looks at single frames before the
  LLM. Its `Segmenter` decides where a unit closes (base: every `unit_frames` frames; StreamKV's
  semantic segments in `streamkv.py`) and an optional `FrameFilter` merges redundant frames into
  the previous one (StreamMem's delta filter in `streammem.py`).
- `Reducer`: stage 2, a pre-LLM token reduction of a unit (StreamingTOM's CTR in `streamingtom.py`).

A builder returns `UnitBatch`es: units that the session encodes together (a segment and its
summary), with the number of frames they account for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from streamvqa.models.base import Piece, Segment, piece_len
from streamvqa.policies.memory import TokenMeta

Vision = Callable[[list[np.ndarray], float], Piece]  # frames, t_start -> piece (the model's vision)


@dataclass
class Unit:
    """One piece to encode: its tokens, where they come from, its time span and kind."""

    piece: Piece
    t0: float
    t1: float
    first_frame: int  # global number of its first frame
    n_frames: int
    kind: str = "frames"  # "frames" | "summary"
    frames: list[np.ndarray] | None = None  # the decoded frames (retrievers that embed them)
    meta: TokenMeta | None = None  # computed from the piece when not given (`token_meta`)

    def token_meta(self) -> TokenMeta:
        if self.meta is None:
            self.meta = piece_meta(self.piece, self.first_frame, self.n_frames)
        return self.meta


@dataclass
class UnitBatch:
    """Units encoded together, and the frames they account for (frames with no token included)."""

    units: list[Unit] = field(default_factory=list)
    n_frames: int = 0


class UnitBuilder:
    """Base: frames in (`push`), batches of units out; `flush` closes the open unit."""

    frame_level = False  # whether units are built from single-frame pieces (state beyond the store)

    def __init__(self, vision: Vision) -> None:
        self.vision = vision
        self.frame_no = 0
        self.frames_merged = 0  # frames averaged into a neighbour (filter, segment cap)

    def push(self, image: np.ndarray, t: float) -> list[UnitBatch]:
        raise NotImplementedError

    def flush(self) -> list[UnitBatch]:
        raise NotImplementedError


class FixedUnits(UnitBuilder):
    """`unit_frames` frames per unit, one piece for them all (the model's own multi-frame input)."""

    def __init__(self, vision: Vision, unit_frames: int) -> None:
        super().__init__(vision)
        self.unit_frames = unit_frames
        self.pending: list[tuple[np.ndarray, float]] = []

    def push(self, image: np.ndarray, t: float) -> list[UnitBatch]:
        self.pending.append((image, t))
        return self.flush() if len(self.pending) >= self.unit_frames else []

    def flush(self) -> list[UnitBatch]:
        if not self.pending:
            return []
        unit, self.pending = self.pending, []
        frames = [f for f, _ in unit]
        piece = self.vision(frames, unit[0][1])
        first, self.frame_no = self.frame_no, self.frame_no + len(unit)
        if not piece_len(piece):  # zero tokens (nothing to see, the model's call): no unit, no positions
            return [UnitBatch([], len(unit))]
        return [UnitBatch([Unit(piece, unit[0][1], unit[-1][1], first, len(unit), frames=frames)], len(unit))]


@dataclass
class FrameItem:
    """A sampled frame waiting in an open unit: its piece (vision already encoded)."""

    piece: Piece
    mean: torch.Tensor  # mean visual token (segmentation, redundancy filter)
    t0: float
    t1: float
    count: int = 1  # frames averaged into it
    number: int = 0  # global frame number

    def absorb(self, other: FrameItem) -> None:
        """Average `other` (the next frame or item) into this one, weighted by frame counts."""
        self.piece = average_pieces(self.piece, other.piece, self.count, other.count)
        self.mean = (self.mean * self.count + other.mean * other.count) / (self.count + other.count)
        self.count += other.count
        self.t1 = other.t1


class Segmenter:
    """Where a unit of single frames closes. Base: every `unit_frames` frames, no summary."""

    def __init__(self, unit_frames: int = 1) -> None:
        self.unit_frames = unit_frames

    @classmethod
    def from_config(cls, config) -> Segmenter:
        """The segmenter a MethodConfig asks for (its `unit_frames`, or the method's own fields)."""
        return cls(config.unit_frames)

    def starts_new(self, items: list[FrameItem], item: FrameItem) -> bool:
        """Whether the open unit closes before `item` joins it."""
        return False

    def full(self, items: list[FrameItem]) -> bool:
        """Whether the open unit closes after its newest frame joined."""
        return len(items) >= self.unit_frames

    def merge_at(self, items: list[FrameItem]) -> int | None:
        """Index i of the pair (i, i+1) to average when the open unit is too long; None: keep all."""
        return None

    def summary(self, items: list[FrameItem]) -> Piece | None:
        """An extra unit encoded after the closed one (StreamKV's summary frame); None: none."""
        return None


class FrameFilter:
    """Frames dropped before the LLM by averaging them into the previous one (StreamMem)."""

    def redundant(self, previous: FrameItem, item: FrameItem) -> bool:
        """Whether a frame (`item`: its piece and mean visual token) adds nothing after the
        `previous` kept frame."""
        raise NotImplementedError


class FrameUnits(UnitBuilder):
    """Every frame its own piece; `segmenter` closes units, `frame_filter` merges redundant frames."""

    frame_level = True

    def __init__(self, vision: Vision, segmenter: Segmenter, frame_filter: FrameFilter | None = None) -> None:
        super().__init__(vision)
        self.segmenter = segmenter
        self.frame_filter = frame_filter
        self.items: list[FrameItem] = []
        self.last: FrameItem | None = None  # the last kept frame as it came (not what was averaged into it)

    def push(self, image: np.ndarray, t: float) -> list[UnitBatch]:
        piece = self.vision([image], t)
        number, self.frame_no = self.frame_no, self.frame_no + 1
        if not piece_len(piece):  # the model gave the frame no tokens: encoded, nothing to keep
            return [UnitBatch([], 1)]
        item = FrameItem(piece, visual_mean(piece), t, t, 1, number)
        if self.frame_filter is not None and self.last is not None and self.frame_filter.redundant(self.last, item):
            self.frames_merged += 1
            if self.items:
                self.items[-1].absorb(item)
            return []
        self.last = replace(item)  # a copy: `absorb` changes the item the unit keeps
        out = self.flush() if self.items and self.segmenter.starts_new(self.items, item) else []
        self.items.append(item)
        i = self.segmenter.merge_at(self.items)
        if i is not None:
            self.items[i].absorb(self.items.pop(i + 1))
            self.frames_merged += 1
        if self.segmenter.full(self.items):
            out += self.flush()
        return out

    def flush(self) -> list[UnitBatch]:
        if not self.items:
            return []
        items, self.items = self.items, []
        piece = [seg for it in items for seg in it.piece]
        metas = [piece_meta(it.piece, it.number, 1) for it in items]
        meta = TokenMeta(*(torch.cat([getattr(m, f) for m in metas]) for f in ("frame", "patch", "visual")))
        units = [Unit(piece, items[0].t0, items[-1].t1, items[0].number, len(items), meta=meta)]
        summary = self.segmenter.summary(items)
        if summary is not None:
            last = items[-1]
            units.append(Unit(summary, last.t1, last.t1, last.number, 1, kind="summary"))
        return [UnitBatch(units, sum(it.count for it in items))]


class Reducer:
    """Stage 2: fewer visual tokens per unit before the LLM."""

    def reduce_unit(self, embeds: torch.Tensor, meta: TokenMeta) -> tuple[torch.Tensor, torch.Tensor]:
        """embeds [N, hidden] of a unit piece -> (reduced [N', hidden], kept indices [N'])."""
        raise NotImplementedError


# -- piece helpers ---------------------------------------------------------------------------
def visual_tokens(piece: Piece) -> torch.Tensor:
    """[n, hidden] the piece's visual tokens (n = 0: none)."""
    vis = [s.embeds for s in piece if s.embeds is not None]
    return torch.cat(vis).float() if vis else torch.zeros(0, 1)


def visual_mean(piece: Piece) -> torch.Tensor:
    vis = visual_tokens(piece)
    return vis.mean(0) if vis.shape[0] else torch.zeros(1)


def average_pieces(a: Piece, b: Piece, wa: float, wb: float) -> Piece:
    """`a` with its visual segments replaced by the weighted mean of a's and b's (same shapes)."""
    out, vb = [], [s for s in b if s.embeds is not None]
    i = 0
    for s in a:
        if s.embeds is None:
            out.append(s)
            continue
        e = (s.embeds.float() * wa + vb[i].embeds.float() * wb) / (wa + wb)
        out.append(Segment(embeds=e.to(s.embeds.dtype), grid=s.grid))
        i += 1
    return out


def piece_meta(piece: Piece, first_frame: int, n_frames: int) -> TokenMeta:
    """Frame number, patch index and visual flag of each token of a unit piece. Visual segments
    are frames when there is one per frame; otherwise the visual tokens split evenly."""
    vis_segments = [s for s in piece if s.embeds is not None]
    per_segment = len(vis_segments) == n_frames
    frame, patch, visual = [], [], []
    current, v_seen = first_frame, 0
    total_vis = sum(s.n for s in vis_segments)
    split = total_vis // n_frames if n_frames and total_vis % n_frames == 0 else total_vis
    for s in piece:
        if s.embeds is None:
            frame.append(torch.full((s.n,), current))
            patch.append(torch.full((s.n,), -1))
            visual.append(torch.zeros(s.n, dtype=torch.bool))
            continue
        if per_segment:
            current = first_frame + v_seen
            frame.append(torch.full((s.n,), current))
            patch.append(torch.arange(s.n))
            v_seen += 1
        else:
            idx = torch.arange(s.n) + v_seen
            f = idx // max(split, 1)
            frame.append(first_frame + f)
            patch.append(idx - f * max(split, 1))
            v_seen += s.n
            current = int(first_frame + f[-1])
        visual.append(torch.ones(s.n, dtype=torch.bool))
    return TokenMeta(torch.cat(frame), torch.cat(patch), torch.cat(visual))
