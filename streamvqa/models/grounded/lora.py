"""Low-rank adapters (LoRA, Hu et al. 2021) on the frozen LM's attention projections.

Deciding "is there a red circle?" means binding a colour word to the shape word after it in
the caption; the soft prompt and word tables alone learn that too slowly for the 45-minute CPU
budget, so the grounded model may add rank-r adapters to SmolLM2's q/k/v/o projections:
``W x + (alpha / r) B A x`` with B zero at the start (the LM starts as the real one).
Training runs them as forward hooks (`hook`); serving adds ``(alpha / r) B A`` into the weights
once (`merge_into`), so the engine sees a plain model and the LM's own weights file is unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
MERGED = "_streamvqa_lora"  # attribute set on a model whose weights hold merged adapters


def _key(module_name: str) -> str:
    return module_name.replace(".", "-")  # module names hold no "-": reversible by `_name`


def _name(key: str) -> str:
    return key.replace("-", ".")


class LowRank(nn.Module):
    """One adapter: A [r, in] (random), B [out, r] (zero)."""

    def __init__(self, d_in: int, d_out: int, rank: int) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.empty(rank, d_in))
        self.b = nn.Parameter(torch.zeros(d_out, rank))
        nn.init.kaiming_uniform_(self.a, a=math.sqrt(5))

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.a.t().to(x.dtype)) @ self.b.t().to(x.dtype)


class LoRA(nn.Module):
    """Adapters for the named Linear modules of a causal LM, keyed by module name."""

    def __init__(self, shapes: dict[str, tuple[int, int, int]], alpha: float) -> None:
        super().__init__()
        self.alpha = float(alpha)
        self.adapters = nn.ModuleDict({_key(n): LowRank(d_in, d_out, r) for n, (d_in, d_out, r) in shapes.items()})

    @classmethod
    def for_model(cls, lm: nn.Module, rank: int, alpha: float, targets: tuple[str, ...] = TARGETS) -> LoRA:
        shapes = {n: (m.in_features, m.out_features, rank) for n, m in lm.named_modules()
                  if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in targets}
        if not shapes:
            raise ValueError(f"no Linear modules named {targets} in the model")
        return cls(shapes, alpha)

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], alpha: float, prefix: str = "lora.adapters.") -> LoRA:
        """Rebuild the adapters from saved tensors (their shapes say everything but alpha)."""
        shapes = {}
        for k, v in state.items():
            if k.startswith(prefix) and k.endswith(".a"):
                name = k[len(prefix):-2]
                shapes[_name(name)] = (v.shape[1], state[prefix + name + ".b"].shape[0], v.shape[0])
        return cls(shapes, alpha)

    @property
    def rank(self) -> int:
        return int(next(iter(self.adapters.values())).a.shape[0])

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def _modules_of(self, lm: nn.Module):
        for key, ad in self.adapters.items():
            yield lm.get_submodule(_name(key)), ad

    def hook(self, lm: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
        """Add the adapters' output to their modules' (training); remove the handles to undo."""
        if getattr(lm, MERGED, None) is not None:
            raise ValueError("the model already holds merged adapters")
        scale = self.scale

        def make(ad: LowRank):
            return lambda _mod, inp, out: out + scale * ad.delta(inp[0])

        return [mod.register_forward_hook(make(ad)) for mod, ad in self._modules_of(lm)]

    @torch.no_grad()
    def merge_into(self, lm: nn.Module) -> None:
        """W += (alpha / r) B A in place, once per model (serving)."""
        merged = getattr(lm, MERGED, None)
        if merged is self:
            return
        if merged is not None:
            raise ValueError("the model already holds other merged adapters; load a fresh copy")
        for mod, ad in self._modules_of(lm):
            mod.weight += (self.scale * ad.b.float() @ ad.a.float()).to(device=mod.weight.device, dtype=mod.weight.dtype)
        lm.__dict__[MERGED] = self  # not setattr: a Module attribute would register as a submodule
