"""Stage 5 framework: a stream's retained memory, token by token, and the retention base class.

The retained memory holds, per layer, the pre-RoPE keys and the values of the tokens a policy
kept, each with its stream position(s) and where it came from (unit, frame, patch, visual or
text). Heads of one layer always hold the same number of tokens (one attention mask), but may
hold *different* tokens (per-head selection); layers may hold different numbers of tokens
(layer-adaptive budgets) because the answer path prefills ragged caches one token at a time.

A policy is a `Retention` subclass whose `score()` is the method's whole idea (kvpress style);
the base class turns scores into a per-head top-k, keeps protected tokens, and enforces the
stream's token budget. Anything still over budget after a policy ran is evicted oldest first:
no policy may leave the memory over its budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields

import torch
from pydantic import BaseModel, ConfigDict


class Options(BaseModel):
    """Base of every policy's options: validated at the edge, unknown options refused."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class TokenMeta:
    """Where each token of a unit comes from: [n] tensors."""

    frame: torch.Tensor  # global frame number (wrapper text tokens carry their frame's number)
    patch: torch.Tensor  # index among the frame's visual tokens; -1 for text
    visual: torch.Tensor  # bool

    @staticmethod
    def text(n: int, frame: int = -1) -> TokenMeta:
        return TokenMeta(torch.full((n,), frame), torch.full((n,), -1), torch.zeros(n, dtype=torch.bool))


@dataclass
class LayerMemory:
    """One layer's retained tokens; every field is [heads, n, ...]."""

    keys: torch.Tensor  # [H, n, d] pre-RoPE
    values: torch.Tensor  # [H, n, d]
    positions: torch.Tensor  # [H, P, n] stream positions
    unit: torch.Tensor  # [H, n] unit index
    frame: torch.Tensor  # [H, n]
    patch: torch.Tensor  # [H, n]
    visual: torch.Tensor  # [H, n] bool
    weight: torch.Tensor  # [H, n] float: how many original tokens this one stands for (merges)

    @property
    def n(self) -> int:
        return int(self.keys.shape[1])

    @property
    def heads(self) -> int:
        return int(self.keys.shape[0])

    def gather(self, idx: torch.Tensor) -> LayerMemory:
        """Keep tokens `idx` [H, k] per head (sorted ascending keeps time order)."""
        out = {}
        for f in fields(self):
            t = getattr(self, f.name)
            if f.name in ("keys", "values"):
                out[f.name] = t.gather(1, idx.unsqueeze(-1).expand(-1, -1, t.shape[-1]))
            elif f.name == "positions":
                out[f.name] = t.gather(2, idx.unsqueeze(1).expand(-1, t.shape[1], -1))
            else:
                out[f.name] = t.gather(1, idx)
        return LayerMemory(**out)

    def cat(self, other: LayerMemory) -> LayerMemory:
        return cat_layers([self, other])

    def nbytes(self) -> int:
        return 2 * self.keys.element_size() * self.keys.nelement()


def cat_layers(parts: list[LayerMemory]) -> LayerMemory:
    """The parts' tokens one after another (one copy, however many parts)."""
    dims = {"positions": 2}
    return LayerMemory(**{f.name: torch.cat([getattr(p, f.name) for p in parts], dim=dims.get(f.name, 1))
                          for f in fields(LayerMemory)})


def unit_layers(keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor, unit: int,
                meta: TokenMeta) -> list[LayerMemory]:
    """A freshly encoded unit ([L, H, n, d] keys/values, [P, n] positions) as per-layer memory."""
    L, H, n, _ = keys.shape
    per_head = lambda t: t.unsqueeze(0).expand(H, *t.shape).clone()  # noqa: E731
    return [
        LayerMemory(
            keys=keys[layer], values=values[layer], positions=per_head(positions),
            unit=torch.full((H, n), unit), frame=per_head(meta.frame), patch=per_head(meta.patch),
            visual=per_head(meta.visual), weight=torch.ones(H, n),
        )
        for layer in range(L)
    ]


@dataclass
class UnitInfo:
    index: int
    t_start: float
    t_end: float
    pos_start: int
    pos_end: int
    n_tokens: int
    kind: str = "frames"  # "frames" | "summary" | "caption"
    text: str | None = None  # a caption's text


class Packed:
    """A unit held in a compressed form (e.g. 4-bit groups); expands to per-layer memory."""

    unit: int
    rep: torch.Tensor | None = None  # its exact representative key [L, H, d], if it keeps one

    def nbytes(self) -> int:
        raise NotImplementedError

    def expand(self) -> list[LayerMemory]:
        raise NotImplementedError


@dataclass
class TokenMemory:
    """The retained memory of one stream (the session's `memory` tier)."""

    layers: list[LayerMemory] = field(default_factory=list)
    units: dict[int, UnitInfo] = field(default_factory=dict)
    packed: dict[int, Packed] = field(default_factory=dict)  # unit -> compressed form
    version: int = 0  # bumped on every change: answer caches built from an older one are stale

    def append(self, info: UnitInfo, layers: list[LayerMemory]) -> None:
        self.units[info.index] = info
        self.layers = layers if not self.layers else [a.cat(b) for a, b in zip(self.layers, layers, strict=True)]
        self.version += 1

    def keep(self, idx: list[torch.Tensor]) -> None:
        """Per layer, the token indices [H, k] to keep; units left with no token are forgotten."""
        self.layers = [layer.gather(i.sort(dim=1).values) for layer, i in zip(self.layers, idx, strict=True)]
        self.version += 1
        self.forget_empty()

    def set_layers(self, layers: list[LayerMemory]) -> None:
        """Replace every layer's tokens (a policy's merges or additions); units are kept."""
        self.layers = layers
        self.version += 1

    def pack(self, packed: Packed, rest: list[LayerMemory]) -> None:
        """Hold unit `packed.unit` in its compressed form; `rest`: the float layers without it."""
        self.packed[packed.unit] = packed
        self.layers = rest
        self.version += 1

    def drop_packed(self, unit: int) -> None:
        """Forget a packed unit (a byte budget evicting it)."""
        del self.packed[unit]
        self.forget_empty()
        self.version += 1

    def rep_keys(self, units: list[int]) -> dict[int, torch.Tensor]:
        """Mean retained pre-RoPE key of each unit, per layer and head: [L, H, d]. A packed unit
        may keep its exact representative (`Packed.rep`, e.g. StreamingTOM's group key)."""
        out = {u: p.rep for u in units if (p := self.packed.get(u)) is not None and p.rep is not None}
        missing = [u for u in units if u not in out]
        if not missing:
            return out
        # one scatter per layer over every token (a mask per unit would cost units x tokens)
        parts = [self.layers] if self.layers else []
        parts += [p.expand() for u in missing if (p := self.packed.get(u)) is not None]
        wanted = torch.tensor(sorted(missing))
        rows = []
        for layer in (cat_layers(list(r)) for r in zip(*parts, strict=True)):
            slot = torch.searchsorted(wanted, layer.unit).clamp_max(len(wanted) - 1)
            slot = torch.where(wanted[slot] == layer.unit, slot, len(wanted))  # others: a spare slot
            h, _, d = layer.keys.shape
            sums = torch.zeros(h, len(wanted) + 1, d).scatter_add_(
                1, slot.unsqueeze(-1).expand(-1, -1, d), layer.keys.float())
            counts = torch.zeros(h, len(wanted) + 1).scatter_add_(1, slot, torch.ones(slot.shape))
            rows.append((sums / counts.clamp_min(1).unsqueeze(-1))[:, :-1])  # [H, U, d]
        means = torch.stack(rows).permute(2, 0, 1, 3) if rows else None  # [L, H, U, d] -> [U, L, H, d]
        for j, u in enumerate(wanted.tolist()):
            out[u] = means[j] if means is not None else torch.zeros(0)
        return {u: out[u] for u in units}

    def forget_empty(self) -> None:
        present = set(self.packed)
        for layer in self.layers:
            present.update(layer.unit.unique().tolist())
        for u in [u for u in self.units if u not in present]:
            del self.units[u]

    @property
    def tokens(self) -> list[int]:
        """Float tokens per layer (packed units not included)."""
        return [layer.n for layer in self.layers]

    def nbytes(self) -> int:
        return sum(layer.nbytes() for layer in self.layers) + sum(p.nbytes() for p in self.packed.values())

    def view(self, exclude: set[int] | None = None, before: float | None = None,
             packed: set[int] | None = None) -> list[LayerMemory]:
        """Per layer, every retained token (packed units expanded) in unit order; with `packed`,
        only those packed units are expanded (a packed unit holds the same tokens in every head,
        so leaving one out equals dropping it afterwards, without decoding it)."""
        parts = [self.layers] if self.layers else []
        parts += [p.expand() for p in sorted(self.packed.values(), key=lambda p: p.unit)
                  if packed is None or p.unit in packed]
        # one concatenation per layer: pairwise ones would copy the memory once per packed unit
        layers = [cat_layers(list(rows)) for rows in zip(*parts, strict=True)] if parts else []
        drop = set(exclude or ())
        if before is not None:
            drop |= {u for u, info in self.units.items() if info.t_end > before}
        return [drop_units(sort_units(layer), drop) for layer in layers]

    def whole_units(self) -> set[int]:
        """Units every layer and head still holds in full (nothing evicted or merged)."""
        if not self.layers:
            return set()
        whole = {u for u, info in self.units.items() if u not in self.packed}
        for layer in self.layers:
            for h in range(layer.heads):
                u = layer.unit[h]
                merged = set(u[layer.weight[h] != 1].tolist())
                counts = torch.bincount(u, minlength=max(self.units) + 1) if u.numel() else torch.zeros(0)
                whole = {w for w in whole if w < len(counts) and int(counts[w]) == self.units[w].n_tokens
                         and w not in merged}
        return whole


@dataclass
class RetainContext:
    """What a policy may look at when it runs after a unit was encoded."""

    budget: int | None  # tokens per layer (layer-adaptive policies: on average over layers)
    new_units: list[int]
    now: float  # presentation time of the newest frame
    n_heads: int  # query heads (GQA: a multiple of the kv heads)
    # pre-RoPE queries of the newest unit's tokens per layer [Hq, n, d] and their positions [P, n]
    unit_queries: list[torch.Tensor] | None = None
    unit_positions: torch.Tensor | None = None
    unit_visual: torch.Tensor | None = None  # [n] bool: which of those tokens are visual
    # run a text after the stream (guidance / proxy prompt): per layer queries [Hq, m, d], positions
    probe: Callable[[str], tuple[list[torch.Tensor], torch.Tensor]] | None = None
    # generate text after the stream: (ids, text, per layer queries of the generated tokens, positions)
    generate: Callable[[str, int], tuple[list[int], str, list[torch.Tensor], torch.Tensor]] | None = None
    rotate: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # adapter.rotate
    add_caption: Callable[[float, float, str], None] | None = None  # text memory (rLiVS captions)
    protected_units: set[int] = field(default_factory=set)


class Retention:
    """Base policy: per layer and head, keep the top-`budget` tokens by `score()`.

    Subclasses state their idea in `score()` (and, where the method allocates budgets per layer
    or acts on every unit whatever the budget, override `budgets()` / `retain()`).
    """

    name = "base"
    Options = Options
    unit_queries = False  # whether `score()` reads the newest unit's own queries (ctx.unit_queries)

    def __init__(self, options: Options | None = None) -> None:
        self.options = options or self.Options()

    def scratch(self) -> tuple[str, int] | None:
        """The text this policy runs after the stream (`ctx.probe` / `ctx.generate`) and the tokens
        it generates after it; the encoder keeps room for them in its device budget."""
        return None

    def score(self, layer: int, mem: LayerMemory, memory: TokenMemory, ctx: RetainContext) -> torch.Tensor:
        """[H, n] importance of each retained token; higher is kept."""
        raise NotImplementedError

    def protected(self, mem: LayerMemory, memory: TokenMemory, ctx: RetainContext) -> torch.Tensor:
        """[H, n] bool: tokens kept whatever their score (summary units by default)."""
        keep = torch.zeros(mem.unit.shape, dtype=torch.bool)
        special = [u for u, info in memory.units.items() if info.kind != "frames"] + sorted(ctx.protected_units)
        if special:
            keep |= torch.isin(mem.unit, torch.tensor(special))
        return keep

    def budgets(self, memory: TokenMemory, ctx: RetainContext) -> list[int]:
        assert ctx.budget is not None
        return [ctx.budget] * len(memory.layers)

    def needs(self, memory: TokenMemory, ctx: RetainContext) -> bool:
        return ctx.budget is not None and any(n > ctx.budget for n in memory.tokens)

    def retain(self, memory: TokenMemory, ctx: RetainContext) -> None:
        if not memory.layers or not self.needs(memory, ctx):
            return
        idx = []
        for layer, (mem, k) in enumerate(zip(memory.layers, self.budgets(memory, ctx), strict=True)):
            if mem.n <= k:
                idx.append(torch.arange(mem.n).unsqueeze(0).expand(mem.heads, -1))
                continue
            s = self.score(layer, mem, memory, ctx).float()
            s = torch.where(self.protected(mem, memory, ctx), torch.full_like(s, float("inf")), s)
            idx.append(top_k(s, k))
        memory.keep(idx)


def sort_units(layer: LayerMemory) -> LayerMemory:
    """Tokens in unit (time) order, per head; stable, so order within a unit is kept."""
    if layer.n == 0:
        return layer
    return layer.gather(layer.unit.argsort(dim=1, stable=True))


def drop_units(layer: LayerMemory, units: set[int]) -> LayerMemory:
    """The layer without the tokens of `units`. Heads must keep equal counts: a head that would
    lose more tokens than another takes back its latest dropped ones."""
    if not units or layer.n == 0:
        return layer
    keep = ~torch.isin(layer.unit, torch.tensor(sorted(units)))
    target = int(keep.sum(1).max())
    return layer.gather(top_k(keep.float(), target).sort(dim=1).values)


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Per head, the indices of the k best scores ([H, n] -> [H, k]); ties go to later tokens
    (recent ones), which matters for flat scores."""
    n = scores.shape[1]
    tiebreak = torch.arange(n, dtype=torch.float64) * 1e-9
    return (scores.double() + tiebreak).topk(min(k, n), dim=1).indices


def enforce_fifo(memory: TokenMemory, max_tokens: int | None, max_bytes: int | None) -> int:
    """Evict oldest tokens until every layer holds at most `max_tokens` and the memory at most
    `max_bytes`; packed units go first, oldest first. Returns how many tokens left (all layers)."""
    gone = 0
    while max_bytes is not None and memory.packed and memory.nbytes() > max_bytes:
        memory.drop_packed(min(memory.packed))
        gone += 1
    if not memory.layers:
        return gone
    caps = [layer.n for layer in memory.layers]
    if max_tokens is not None:
        caps = [min(c, max_tokens) for c in caps]
    if max_bytes is not None:
        per_token = [2 * layer.keys.element_size() * layer.heads * layer.keys.shape[-1] for layer in memory.layers]
        fixed = sum(p.nbytes() for p in memory.packed.values())
        while sum(c * b for c, b in zip(caps, per_token, strict=True)) + fixed > max_bytes and any(caps):
            i = max(range(len(caps)), key=lambda j: caps[j])
            caps[i] -= 1
    if caps == memory.tokens:
        return gone
    idx = []
    for layer, c in zip(memory.layers, caps, strict=True):
        gone += layer.n - c
        idx.append(torch.arange(layer.n - c, layer.n).unsqueeze(0).expand(layer.heads, -1))
    memory.keep(idx)
    return gone


def attention(q: torch.Tensor, q_pos: torch.Tensor, mem: LayerMemory,
              rotate: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Mean attention probability each retained token receives from the queries q [Hq, m, d]
    (pre-RoPE, at positions q_pos [P, m]), over rows and the GQA group: [H, n].

    Keys are rotated at their stream positions (per head) and queries at theirs, so the scores
    are the model's own attention logits restricted to the memory."""
    H, n, d = mem.keys.shape
    if n == 0:
        return torch.zeros(H, 0)
    group = q.shape[0] // H
    qr = rotate(q.float(), q_pos)  # [Hq, m, d]
    out = []
    for h in range(H):
        k = rotate(mem.keys[h:h + 1].float(), mem.positions[h])[0]  # [n, d]
        logits = qr[h * group:(h + 1) * group] @ k.T / d ** 0.5  # [group, m, n]
        out.append(logits.softmax(dim=-1).mean(dim=(0, 1)))
    return torch.stack(out)
