"""No retrieval: the compact cache is answered directly (stage 7 "none").

InfiniPot-V (arXiv 2506.15745), StreamMem (arXiv 2508.15717) and StreamingVLM (arXiv 2510.09608)
keep a bounded memory by query-agnostic retention and never search it at question time; the
question is prefilled on whatever the memory holds. Here that memory is the session's hot window
(`ctx.window_ids`: what retention kept there), so this is `WindowOnly` under its paper name;
nothing else is fetched, whatever the colder tiers hold.
"""

from __future__ import annotations

from streamvqa.policies.retrieval.base import WindowOnly


class NoRetrieval(WindowOnly):
    """Every layer gets the compact cache (the window's blocks), in time order."""
