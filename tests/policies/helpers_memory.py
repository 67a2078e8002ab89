"""Small hand-made memories for policy tests."""

import torch

from streamvqa.policies.memory import TokenMemory, TokenMeta, UnitInfo, unit_layers


def memory_of(units: list[dict], layers: int = 1, heads: int = 1) -> TokenMemory:
    """units: dicts with keys [n, d] (or [L, H, n, d]), values, optional frame/patch/visual, t."""
    mem = TokenMemory()
    pos = 0
    for i, u in enumerate(units):
        k, v = torch.as_tensor(u["keys"], dtype=torch.float32), torch.as_tensor(u["values"], dtype=torch.float32)
        if k.dim() == 2:
            k = k.expand(layers, heads, *k.shape).clone()
            v = v.expand(layers, heads, *v.shape).clone()
        n = k.shape[2]
        meta = TokenMeta(
            torch.as_tensor(u.get("frame", [i] * n)), torch.as_tensor(u.get("patch", list(range(n)))),
            torch.as_tensor(u.get("visual", [True] * n)),
        )
        positions = torch.arange(pos, pos + n).view(1, n)
        t = u.get("t", float(i))
        mem.append(UnitInfo(i, t, t, pos, pos + n, n, u.get("kind", "frames")), unit_layers(k, v, positions, i, meta))
        pos += n
    return mem
