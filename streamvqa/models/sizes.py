"""Real sizes, measured: random weights at the published checkpoints' sizes, streamed through the
engine (`streamvqa models --measure`).

Per checkpoint: LLM tokens per frame at the family's default frame size, KV bytes stored per frame
and per stream-hour at 0.5 and 1 fps (the store's bytes, as ReKV counts its offloaded cache), encode
time per frame, and the time to the first token of a question after the stream's first frames and
after 10 and 60 minutes at 0.5 fps. For the long streams the encoded frames' blocks are stored
again at later times and positions (sharing their tensors) and the window is rebuilt from the
store as a replica's is (`engine/replica.sync`): the question's cost (retrieval over every block,
the assembled cache, the prefill) depends on how many blocks and tokens there are, not on their
values, and encoding an hour of frames at these sizes is a GPU's job.

A checkpoint whose weights do not fit `max_gb` is measured as its *attention geometry*: the same
layers, KV heads, head size and visual tokens per frame, with the MLPs and all but one vision block
cut. Its KV bytes are exact (they depend on nothing else); its times are not reported (they need
the whole model, i.e. a GPU: docs/benchmarks.md).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from streamvqa.models.published import published_tokenizer, reduced_config

# Depth and widths from the checkpoints' public configuration cards: (family, text, vision).
SIZES: dict[str, tuple[str, dict, dict]] = {
    "SmolVLM2-256M-Video-Instruct": (
        "smolvlm",
        dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
             num_key_value_heads=3),
        dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
    ),
    "llava-onevision-qwen2-0.5b-ov": (
        "llava_onevision",
        dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
             num_key_value_heads=2),
        dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=26, num_attention_heads=16),
    ),
    "llava-onevision-qwen2-7b-ov": (
        "llava_onevision",
        dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
             num_key_value_heads=4),
        dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=26, num_attention_heads=16),
    ),
    "Qwen2-VL-2B-Instruct": (
        "qwen2_vl",
        dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
             num_key_value_heads=2),
        dict(depth=32, embed_dim=1280, num_heads=16, hidden_size=1536),
    ),
    "Qwen2.5-VL-3B-Instruct": (
        "qwen2_5_vl",
        dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
             num_key_value_heads=2),
        dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
             fullatt_block_indexes=[7, 15, 23, 31]),
    ),
    "Qwen2.5-VL-7B-Instruct": (
        "qwen2_5_vl",
        dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
             num_key_value_heads=4),
        dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
             fullatt_block_indexes=[7, 15, 23, 31]),
    ),
    "Qwen3-VL-2B-Instruct": (
        "qwen3_vl",
        dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
             num_key_value_heads=8),
        dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, out_hidden_size=2048,
             deepstack_visual_indexes=[5, 11, 17]),
    ),
    "Idefics3-8B-Llama3": (
        "idefics3",
        dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
             num_key_value_heads=8),
        dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16),
    ),
}
# ReKV (methods.md): LLaVA-OV-7B stores 18.8 GB of KV per hour of video at 0.5 fps.
REKV_GIB_PER_HOUR = 18.8


@dataclass
class SizeReport:
    checkpoint: str
    family: str
    mode: str  # "full" (published size) or "geometry" (attention geometry only)
    params: int  # of the measured model
    tokens_per_frame: float
    kv_bytes_per_frame: float  # keys and values
    stored_bytes_per_frame: float  # a stored block: keys, values, positions, its index key
    kv_gib_per_hour: dict[str, float]  # at 16-bit (as served in bf16): {"0.5": ..., "1": ...}
    encode_s_per_frame: float | None
    first_token_s: float | None
    first_token_s_after: dict[str, float]  # minutes of stream (at 0.5 fps) -> seconds
    frames: int
    dtype: str


def published_size_config(checkpoint: str, geometry: bool = False):
    """The checkpoint's configuration at its published size (or its attention geometry only)."""
    family, text, vision = SIZES[checkpoint]
    cfg = reduced_config(family)
    tc, vc = cfg.text_config, cfg.vision_config
    for k, v in text.items():
        setattr(tc, k, v)
    tc.head_dim = text["hidden_size"] // text["num_attention_heads"]
    if getattr(tc, "layer_types", None):  # one entry per layer (all full attention in these families)
        tc.layer_types = [tc.layer_types[0]] * tc.num_hidden_layers
    for k, v in vision.items():
        setattr(vc, k, v)
    if hasattr(vc, "num_heads") and "num_heads" not in vision:
        vc.num_heads = vision.get("num_attention_heads", vc.num_heads)
    if geometry:
        tc.intermediate_size = 8
        for depth in ("depth", "num_hidden_layers"):
            if hasattr(vc, depth) and depth in vision:
                setattr(vc, depth, 1)
        if hasattr(vc, "deepstack_visual_indexes"):  # added into hidden states: no KV of its own
            vc.deepstack_visual_indexes = [0]
        if hasattr(vc, "fullatt_block_indexes"):
            vc.fullatt_block_indexes = [0]
    if hasattr(cfg, "streamvqa_frame_size"):
        del cfg.streamvqa_frame_size  # the adapter's default frame size, not the test models'
    return cfg


def count_params(cfg) -> int:
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(cfg)
    return sum(p.numel() for p in model.parameters())


def build_adapter(checkpoint: str, geometry: bool, dtype: torch.dtype):
    from transformers import AutoModelForImageTextToText

    from streamvqa.models.loading import adapter_class

    family = SIZES[checkpoint][0]
    cfg = published_size_config(checkpoint, geometry)
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(cfg, dtype=dtype).eval()
    return adapter_class(cfg.model_type)(model, published_tokenizer(family), None, checkpoint)


def camera_frame(i: int, h: int = 360, w: int = 640) -> np.ndarray:
    """A 640 x 360 frame (a camera's 16:9) with a moving square: the adapter resizes it."""
    img = np.full((h, w, 3), 40, dtype=np.uint8)
    x = (37 * i) % (w - 64)
    img[100:164, x:x + 64] = (200, 60 + i % 150, 30)
    return img


def measure(checkpoint: str, frames: int = 4, max_gb: float = 8.0, dtype: str = "float32") -> SizeReport:
    """Stream `frames` frames at 1 fps through a `rekv` session and ask one question. Times are
    in `dtype` (float32: a CPU's fast path); KV per hour is given at 16 bits, as served on a GPU."""
    from streamvqa.engine import Engine

    torch_dtype = getattr(torch, dtype)
    nbytes = torch.finfo(torch_dtype).bits // 8
    geometry = count_params(published_size_config(checkpoint)) * nbytes > max_gb * 2**30
    adapter = build_adapter(checkpoint, geometry, torch_dtype)
    params = sum(p.numel() for p in adapter.model.parameters())
    session = Engine(adapter=adapter).open_stream("measure", method="rekv")
    times = []
    for i in range(frames + 1):  # the first frame warms up (allocations, lazy init)
        t0 = time.perf_counter()
        session.push_frame(camera_frame(i), float(i))
        session.flush()
        times.append(time.perf_counter() - t0)
    stats = session.stats()
    blocks = session.get_blocks(session.block_index().indices)
    n = max(1, stats.frames_encoded)
    tokens = sum(b.n_tokens for b in blocks) / n
    kv = sum(b.keys.nbytes + b.values.nbytes for b in blocks) / n  # keys and values, as ReKV counts
    stored = sum(b.nbytes for b in blocks) / n  # everything a stored block takes (positions, index key)
    first_token, after = None, {}
    if not geometry:
        first_token = session.answer("What is moving?", max_tokens=1).timings["first_token_s"]
        for minutes in LONG_MINUTES:
            after[str(minutes)] = round(first_token_after(session, minutes), 3)
    session.close()
    return SizeReport(
        checkpoint=checkpoint, family=SIZES[checkpoint][0], mode="geometry" if geometry else "full",
        params=params, tokens_per_frame=round(tokens, 1), kv_bytes_per_frame=kv, stored_bytes_per_frame=stored,
        kv_gib_per_hour={str(fps): round(kv * 2 / nbytes * fps * 3600 / 2**30, 2) for fps in (0.5, 1)},
        encode_s_per_frame=None if geometry else round(statistics.median(times[1:]), 3),
        first_token_s=None if first_token is None else round(first_token, 3), first_token_s_after=after,
        frames=n, dtype=dtype,
    )


LONG_MINUTES = (10, 60)


def first_token_after(session, minutes: float, fps: float = 0.5) -> float:
    """Seconds to the first token once the stream holds `minutes` of blocks at `fps` (the
    encoded blocks repeated at later times and positions), its window rebuilt from the store."""
    from dataclasses import replace

    from streamvqa.engine import replica

    store, sid = session.store, session.stream_id
    base = store.get_many(sid, store.index(sid).indices)
    pos = base[-1].pos_end
    for i in range(len(base), int(minutes * 60 * fps)):
        b = base[i % len(base)]
        t = i / fps
        store.put(replace(b, index=i, t_start=t, t_end=t, positions=b.positions + (pos - b.pos_start),
                          pos_start=pos, pos_end=pos + b.extent))
        pos += b.extent
    with session.lock:
        replica.sync(session)
    return session.answer("What is moving?", max_tokens=1).timings["first_token_s"]


def run(checkpoints: list[str], frames: int, max_gb: float, dtype: str) -> list[dict]:
    rows = []
    for name in checkpoints:
        r = asdict(measure(name, frames=frames, max_gb=max_gb, dtype=dtype))
        print(f"{name:32s} {r['mode']:8s} {r['tokens_per_frame']:7.1f} tok/frame  "
              f"{r['kv_bytes_per_frame'] / 2**20:7.2f} MiB/frame  {r['kv_gib_per_hour']['0.5']:6.2f} GiB/h @0.5fps  "
              f"encode {r['encode_s_per_frame']} s/frame  first token {r['first_token_s']} s, "
              f"after 10/60 min {r['first_token_s_after']}", flush=True)
        rows.append(r)
    return rows
