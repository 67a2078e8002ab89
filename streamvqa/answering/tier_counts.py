"""What the KV connector loads into vLLM, per store tier, and what vLLM's prefix cache spared it.

The server knows where each retrieved block was read from (its answer's `tiers`); it hands the
connector the memory's layout as spans, ``[[tier, tokens], ...]`` in cache order (the sink first,
then the blocks of the selection), inside the question's KV spec (`kvfile.KVSpec` travels as a
dict, extra keys ride along). The connector, in the vLLM process, counts the tokens it writes
against those spans: blocks and bytes per tier. On the scheduler side it counts the memory
tokens vLLM's prefix cache already held (a follow-up over the same memory), which it does not load.

Standard library only: imported by the vLLM process (`.venv-vllm`) and by the server.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

SPANS_KEY = "spans"  # in the KV spec dict: [[tier, tokens], ...] in cache order
OTHER = "other"  # memory tokens past the spans (e.g. retrieved captions' text)


def spans(sink_tokens: int, blocks: list[tuple[str, int]]) -> list[list]:
    """The memory's spans in cache order: the sink, then each block's (tier, tokens)."""
    return [["sink", int(sink_tokens)]] + [[str(tier), int(n)] for tier, n in blocks]


@dataclass
class TierCounts:
    """Counters of one vLLM process (scheduler and worker share it: uniprocess executor)."""

    blocks: dict[str, int] = field(default_factory=dict)  # streamvqa blocks (spans) written, partly or whole
    tokens: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    prefix_hits: int = 0  # questions whose memory vLLM's prefix cache held whole: nothing loaded
    prefix_hit_tokens: int = 0  # memory tokens served by the prefix cache instead of loaded
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def loaded(self, spec: dict, start: int, end: int, bytes_per_token: int) -> None:
        """Memory tokens [start, end) of `spec` were written into vLLM's cache."""
        runs = list(spec.get(SPANS_KEY) or [])
        covered = sum(int(n) for _, n in runs)
        if end > covered:
            runs.append([OTHER, end - covered])
        with self.lock:
            pos = 0
            for tier, n in runs:
                lo, hi = max(start, pos), min(end, pos + int(n))
                pos += int(n)
                if hi <= lo:
                    continue
                self.blocks[tier] = self.blocks.get(tier, 0) + 1
                self.tokens[tier] = self.tokens.get(tier, 0) + hi - lo
                self.bytes[tier] = self.bytes.get(tier, 0) + (hi - lo) * bytes_per_token

    def matched(self, memory: int, external: int) -> None:
        """Scheduler side: of `memory` tokens, `external` are to be loaded; the rest vLLM holds."""
        if memory <= 0:
            return
        cached = max(0, memory - external)
        with self.lock:
            self.prefix_hit_tokens += cached
            if external <= 0:
                self.prefix_hits += 1

    def text(self) -> str:
        """Prometheus text exposition (counters)."""
        with self.lock:
            per_tier = [("blocks_loaded_by_tier_total", "streamvqa blocks (the sink counts as one) whose memory "
                         "the connector wrote into vLLM's cache, by the tier the answer read them from",
                         dict(self.blocks)),
                        ("tokens_loaded_by_tier_total", "memory tokens written into vLLM's cache, by tier",
                         dict(self.tokens)),
                        ("bytes_loaded_by_tier_total", "memory KV bytes written into vLLM's cache, by tier",
                         dict(self.bytes))]
            hits, hit_tokens = self.prefix_hits, self.prefix_hit_tokens
        out = []
        for name, help_, values in per_tier:
            out.append(f"# HELP streamvqa_vllm_connector_{name} {help_}\n"
                       f"# TYPE streamvqa_vllm_connector_{name} counter\n")
            out += [f'streamvqa_vllm_connector_{name}{{tier="{t}"}} {v}\n' for t, v in sorted(values.items())]
        for name, help_, value in [
            ("prefix_hits_total", "questions whose whole memory vLLM's prefix cache held (nothing loaded)", hits),
            ("prefix_hit_tokens_total", "memory tokens vLLM's prefix cache held, not loaded", hit_tokens),
        ]:
            out.append(f"# HELP streamvqa_vllm_connector_{name} {help_}\n"
                       f"# TYPE streamvqa_vllm_connector_{name} counter\n"
                       f"streamvqa_vllm_connector_{name} {value}\n")
        return "".join(out)


COUNTS = TierCounts()
