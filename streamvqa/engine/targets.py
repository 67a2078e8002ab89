"""Stage 3: what a unit is encoded on, the encode target of a session.

- `WindowTarget` (ReKV and most presets): the hot window, the sink plus the most recent units
  (`n_local` tokens); a unit's block joins it and pushes the oldest out.
- `MemoryTarget` (InfiniPot-V, StreamMem, StreamingVLM, rLiVS): the retained memory, loaded into
  the window's cache; a new unit is appended on top and the cache is reloaded from the memory
  whenever retention changed it.
"""

from __future__ import annotations

from streamvqa.engine.window import HotWindow
from streamvqa.policies.memory import TokenMemory
from streamvqa.store.block import Block


class WindowTarget:
    on_memory = False

    def __init__(self, window: HotWindow) -> None:
        self.window = window

    def commit(self, block: Block) -> None:
        """The forward appended `block`'s tokens to the cache: account for them."""
        self.window.push(block)

    def memory_changed(self, memory: TokenMemory, layout: str, next_position: int) -> bool:
        """Retention changed the memory; returns whether the cache was reloaded."""
        return False


class MemoryTarget(WindowTarget):
    on_memory = True

    def commit(self, block: Block) -> None:
        self.window.advance(block)

    def memory_changed(self, memory: TokenMemory, layout: str, next_position: int) -> bool:
        self.window.load_memory(memory.view(), memory.units, layout, next_position)
        return True
