"""`kv_budget`: the same hot-memory budget for every preset, mapped to each one's own options.

*Hot memory* is the KV the language model attends to: the encoder's cache (the sliding window,
or the retained memory for presets that encode on it) and an answer's cache (the retrieved
blocks, or the retained memory answered from), in tokens per layer besides the prompt's sink
tokens. A budget of B tokens is B x `token_bytes` bytes (K and V, every layer; 46,080 bytes a
token for the default model in float32). What a preset keeps *outside* attention (blocks
offloaded to the store, a compacted memory it retrieves from) is reported separately as store
bytes: the eval records both, and `HotMeter` measures the hot tokens a run really held.

Budgets are given as tokens ("2048"), bytes ("96MiB", "5000000B") or a share of what `full`
holds for the stream ("5%"). The mapping per preset (`budget_options`) sizes windows, memories
and retrieval so each part stays within B; units of the default model are frames of 12 tokens.
"""

from __future__ import annotations

import re

FRAME_TOKENS = 12  # the default model: 11 caption tokens and a newline per frame that shows something
UNBOUNDED = ("full",)  # references, never budgeted
# earlier configurations kept for comparison: name -> the preset their budgeted options start from
VARIANTS = {"hybrid-v1": "infinipot-v"}  # the hybrid before issue 22 (InfiniPot-V compaction, adaptive k)
UNSUPPORTED = {
    "rekv-external": "needs a local CLIP/SigLIP encoder",
    "rlivs": "writes a caption per 16-frame clip with the LM (hours on this CPU for a 60-minute stream)",
}


def parse_budget(text: str, full_tokens: int, token_bytes: int) -> int:
    """Tokens per layer for "2048", "5%", "96MiB", "1.5GB" or "5000000B"."""
    s = str(text).strip()
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*(%|[KMG]i?B|B)?", s, flags=re.IGNORECASE)
    if not m:
        raise ValueError(f"kv_budget {text!r}: expected tokens (2048), a share of full (5%) or bytes (96MiB)")
    value, unit = float(m.group(1)), (m.group(2) or "").upper()
    if unit == "%":
        tokens = full_tokens * value / 100
    elif unit:
        scale = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}[unit]
        tokens = value * scale / token_bytes
    else:
        tokens = value
    if tokens < FRAME_TOKENS:
        raise ValueError(f"kv_budget {text!r} is {tokens:.0f} tokens: less than one frame ({FRAME_TOKENS})")
    return int(tokens)


def budget_options(method: str, tokens: int) -> dict:
    """Options that hold `method` within `tokens` of hot memory per layer (see module docstring)."""
    if method in UNSUPPORTED:
        raise ValueError(f"kv_budget: {method} is not budgeted here ({UNSUPPORTED[method]})")
    b, f = int(tokens), FRAME_TOKENS
    frames = max(1, b // f)
    half = max(f, b // 2)
    quarter = max(1, frames // 4) * f  # whole frames: a partly kept frame would come back whole
    recent = min(4 * f, quarter)  # hybrid's last frames
    table: dict[str, dict] = {
        "full": {},
        # encoder window of B; answers from the window alone
        "sliding-window": {"n_local": b},
        # encoder window of B; top-k blocks of one frame each, k x 12 <= B
        "rekv": {"n_local": b, "topk": frames},
        # segments of at most 8 frames (96 tokens, 60% kept), as many per layer as fit B
        "streamkv": {"n_local": b, "max_segment": 8, "max_blocks": max(1, b // (8 * f)),
                     "topk": max(1, b // (12 * f)), "local_blocks": min(8, max(0, b // (32 * f)))},
        # encode on, and answer from, a memory of B tokens
        "infinipot-v": {"memory_tokens": b},
        "streammem": {"memory_tokens": max(b, 8 * f)},
        "resv": {"n_local": b, "memory_tokens": b},
        # the frames of the last (frames - 1) seconds at 1 fps: `frames` frames, both ends included
        "streamingvlm": {"retention_options": {"vision_window_s": float(max(0, frames - 1)), "text_sink": 0,
                                               "text_window": 0}},
        # short-term window of B, long-term memory of B that PaR pages are retrieved from
        "livevlm": {"n_local": b, "memory_tokens": b, "retention_options": {"short_term": b // 4}},
        # window of B, groups retrieved up to B tokens
        "streamingtom": {"n_local": b, "retrieve_tokens": b},
        # window of B; at most 4 retrieved frames, or the last B/4 of whole frames (at most 4) when
        # the question names nothing: more moments in view lower accuracy (docs/benchmarks.md)
        "hybrid": {"n_local": b, "memory_tokens": recent, "topk": min(4, max(1, b // f))},
        "hybrid-kv": {"n_local": b, "memory_tokens": quarter, "topk": max(1, (b - quarter) // f)},
        # the former hybrid: InfiniPot-V memory of B/2, adaptive top-2..k frames in B/2 (its answer
        # cache may exceed B: a partly kept unit retrieved by one layer comes back whole to all)
        "hybrid-v1": {"n_local": b, "encode_on": "window", "positions": "contiguous", "retrieval": "rekv",
                      "memory_tokens": half, "demote": True, "keep_memory": True, "topk": max(1, half // f),
                      "score_mass": 0.9, "min_blocks": min(2, max(1, half // f))},
    }
    if method not in table:
        raise ValueError(f"kv_budget: no mapping for method {method!r}")
    return table[method]


def preset_of(method: str) -> str:
    """The preset a method name (or a kept variant of one) runs."""
    return VARIANTS.get(method, method)


class HotMeter:
    """The most hot tokens (per layer, besides the sink) a session held: its encoder cache after
    each frame and each answer's cache. A unit being encoded adds at most one unit on top."""

    def __init__(self) -> None:
        self.encoder = 0
        self.answer = 0

    def after_frame(self, session) -> None:
        memory = session.retainer.memory if session.retainer is not None else None
        # a memory encoded on is the encoder's cache; one retrieved from (StreamKV's segments,
        # LiveVLM's pages) is storage until a question picks from it, counted in the answer cache
        on_memory = memory is not None and session.config.encode_on == "memory"
        held = max(memory.tokens, default=0) if on_memory else 0
        self.encoder = max(self.encoder, session.window.tokens, held)

    def after_answer(self, session) -> None:
        assembled = session.answer_cache  # the answer's cache, rolled back to its blocks
        if assembled is None:
            return
        sink = session.window.sink.n_tokens
        lengths = [layer.keys.shape[-2] for layer in assembled.cache.layers if getattr(layer, "keys", None) is not None]
        self.answer = max(self.answer, max(lengths, default=assembled.length) - sink)

    @property
    def peak(self) -> int:
        return max(self.encoder, self.answer)
