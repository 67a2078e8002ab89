"""The memory stages of one stream session: units (1), pre-LLM reduction (2), window variants
(3), retention into the bounded memory (5), byte budgets, and demotion to the store.

The session keeps its original path for the presets that retain nothing (`full`, `rekv`,
`sliding-window` without byte budgets), so their behaviour is unchanged by construction. Every
other preset goes through `MemoryStages`:

- frames become units: fixed groups of `unit_frames`, or StreamKV semantic segments (+ summary
  unit), after StreamMem's redundant-frame filter; in that "frame" path every frame is its own
  timestamped piece, so a segment is exactly the token sequence `full` would encode;
- CTR (StreamingTOM) may reduce each frame's visual tokens before the LLM;
- a unit is encoded on the sliding window, or on the retained memory (InfiniPot-V, StreamMem,
  StreamingVLM, rLiVS); its KV joins the memory and the retention policy compacts it;
- budgets: `memory_tokens` and `budget_bytes` {"device": encoder cache, "memory": retained
  memory, "store": this stream's blocks in the store}. The encoder makes room *before* a
  forward, so the cache never holds more than its budget; the memory is brought within its
  budget after every unit (oldest first if the policy left it over); a block that would take
  the stream's store bytes over budget is not written (counted in `units_dropped`);
- demote, don't delete: with `demote`, every unit's original block goes to the store as it is
  encoded (host RAM, then disk/Redis by the store's own budgets), indexed, so retrieval can bring
  back what retention dropped from the memory.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from streamvqa.engine.capture import Capture, capture, to_host
from streamvqa.engine.errors import EngineError
from streamvqa.engine.window import new_cache, place_memory
from streamvqa.models.base import Piece, Segment
from streamvqa.policies import streamkv
from streamvqa.policies.memory import (
    LayerMemory,
    RetainContext,
    TokenMemory,
    TokenMeta,
    UnitInfo,
    drop_units,
    enforce_fifo,
    sort_units,
    unit_layers,
)
from streamvqa.policies.retrieval.base import AllBlocks, Caption, Selection, WindowOnly
from streamvqa.store.block import Block


@dataclass
class FrameItem:
    """A sampled frame waiting in an open unit: its piece (vision already encoded)."""

    piece: Piece
    mean: torch.Tensor  # mean visual token (segmentation, redundancy filter)
    t0: float
    t1: float
    count: int = 1  # frames averaged into it
    number: int = 0  # global frame number


def visual_mean(piece: Piece) -> torch.Tensor:
    vis = [s.embeds for s in piece if s.embeds is not None]
    return torch.cat(vis).float().mean(0) if vis else torch.zeros(1)


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


class MemoryStages:
    def __init__(self, session) -> None:
        # a proxy, not a reference: the session owns its stages, and a cycle between them would
        # keep every tensor of a deleted stream alive until Python's cycle collector ran
        self.s = weakref.proxy(session)
        c = session.config
        a = session.adapter
        self.config = c
        self.retention = c.retention_policy()
        self.reducer = c.reducer()
        self.memory: TokenMemory | None = TokenMemory() if self.retention is not None else None
        self.frame_mode = c.units == "semantic" or c.frame_filter is not None or self.reducer is not None
        self.active = self.memory is not None or self.frame_mode or bool(c.budget_bytes)
        self.items: list[FrameItem] = []
        self.frame_no = 0
        self.last_mean: torch.Tensor | None = None
        self.unit_queries: tuple[list[torch.Tensor], torch.Tensor, torch.Tensor] | None = None
        es = torch.empty(0, dtype=a.dtype).element_size()
        self.token_bytes = 2 * a.n_kv_heads * a.head_dim * es * a.n_layers  # K+V, all layers
        b = c.budget_bytes
        self.mem_bytes = b.get("memory")
        self.mem_tokens = c.memory_tokens
        if self.mem_bytes is not None:
            cap = self.mem_bytes // self.token_bytes
            self.mem_tokens = cap if self.mem_tokens is None else min(self.mem_tokens, cap)
        self.device_bytes = b.get("device")
        self.store_bytes = b.get("store")
        self.store_used = 0
        self.extra_tokens = 0  # tokens a policy's probe or caption adds to the cache for a moment
        if self.device_bytes is not None:  # the window's spare room counts against its budget too
            session.window.limit = session.window.sink.n_tokens + self.device_cap()
            session.window.set_sink(session.window.sink)

    @property
    def layout(self) -> str:
        return "original" if self.config.positions == "original" else "contiguous"

    def device_cap(self) -> int | None:
        """Tokens the encoder cache may hold besides the sink."""
        if self.device_bytes is None:
            return None
        sink = self.s.window.sink
        sink_bytes = self.token_bytes * sink.n_tokens
        return max(0, (self.device_bytes - sink_bytes) // self.token_bytes)

    # -- stage 1: units --------------------------------------------------------------------
    def push(self, image: np.ndarray, t: float) -> None:
        """One frame (the session holds its push lock)."""
        s, c = self.s, self.config
        if not self.frame_mode:
            s._pending.append((image, float(t)))
            if len(s._pending) >= c.unit_frames:
                self.flush()
            return
        with s.lock, torch.inference_mode():
            piece = s.adapter.unit_piece([image], t)
        if not piece:  # the model gave the frame no tokens: encoded, nothing to keep
            s._stats.frames_encoded += 1
            self.frame_no += 1
            return
        item = FrameItem(piece, visual_mean(piece), float(t), float(t), 1, self.frame_no)
        self.frame_no += 1
        if c.frame_filter is not None and self.last_mean is not None and \
                float(F.cosine_similarity(self.last_mean, item.mean, dim=0)) > c.frame_filter:
            # StreamMem's input filter: a redundant frame is averaged into the previous one
            s._stats.frames_merged += 1
            if self.items:
                last = self.items[-1]
                last.piece = average_pieces(last.piece, item.piece, last.count, 1)
                last.mean = (last.mean * last.count + item.mean) / (last.count + 1)
                last.count += 1
                last.t1 = item.t1
            return
        self.last_mean = item.mean
        if c.units == "semantic":
            if self.items and streamkv.boundary(self.items[-1].mean, item.mean, len(self.items), c.segment_theta,
                                                c.min_segment):
                self.flush()
            self.items.append(item)
            if len(self.items) > c.max_segment:  # StreamKV's code merges the most similar pair
                i = streamkv.most_similar_pair([x.mean for x in self.items])
                x, y = self.items[i], self.items[i + 1]
                x.piece = average_pieces(x.piece, y.piece, x.count, y.count)
                x.mean = (x.mean * x.count + y.mean * y.count) / (x.count + y.count)
                x.count += y.count
                x.t1 = y.t1
                del self.items[i + 1]
                s._stats.frames_merged += 1
        else:
            self.items.append(item)
            if len(self.items) >= c.unit_frames:
                self.flush()

    def flush(self) -> None:
        """Encode the open unit (a question also closes it: it must see every frame)."""
        s = self.s
        if not self.frame_mode and s._pending:
            unit, s._pending = s._pending, []
            with s.lock, torch.inference_mode():
                piece = s.adapter.unit_piece([f for f, _ in unit], unit[0][1])
            if not piece:  # only frames the model gives no tokens: no unit, no positions
                s._stats.frames_encoded += len(unit)
                self.frame_no += len(unit)
                return
            self.encode_units([(piece, piece_meta(piece, self.frame_no, len(unit)), unit[0][1], unit[-1][1])],
                              len(unit))
            self.frame_no += len(unit)
        if not self.items:
            return
        items, self.items = self.items, []
        piece = [seg for it in items for seg in it.piece]
        metas = [piece_meta(it.piece, it.number, 1) for it in items]
        meta = TokenMeta(*(torch.cat([getattr(m, f) for m in metas]) for f in ("frame", "patch", "visual")))
        units = [(piece, meta, items[0].t0, items[-1].t1)]
        if self.config.units == "semantic" and self.config.summary and len(items) > 1:
            summary = items[0].piece
            for k, it in enumerate(items[1:], start=1):
                summary = average_pieces(summary, it.piece, k, 1)
            units.append((summary, piece_meta(summary, items[-1].number, 1), items[-1].t1, items[-1].t1))
        self.encode_units(units, sum(it.count for it in items))

    # -- stages 2-5 ------------------------------------------------------------------------
    def encode_units(self, units: list[tuple[Piece, TokenMeta, float, float]], n_frames: int) -> None:
        s = self.s
        start = time.perf_counter()
        new = []
        with s.lock, torch.inference_mode():
            for k, (piece, meta, t0, t1) in enumerate(units):
                new.append(self._encode(piece, meta, t0, t1, "frames" if k == 0 else "summary"))
            if self.memory is not None:
                self._retain(new, units[-1][3])
        seconds = time.perf_counter() - start
        st = s._stats
        st.frames_encoded += n_frames
        st.units_encoded += len(units)
        st.encode_seconds_total += seconds
        for obs in s.observers:
            obs.on_unit_encoded(s.stream_id, seconds, n_frames)

    def _encode(self, piece: Piece, meta: TokenMeta, t0: float, t1: float, kind: str) -> int:
        s, a, c = self.s, self.s.adapter, self.config
        p0 = s.tracker.next
        positions = s.tracker.place(piece)
        p1 = s.tracker.next
        embeds = a.embed(piece)
        if self.reducer is not None and kind == "frames":
            reduced, keep = self.reducer.reduce_unit(embeds[0], meta)
            embeds, positions = reduced.unsqueeze(0).to(embeds.dtype), positions[:, keep]
            meta = TokenMeta(meta.frame[keep], meta.patch[keep], meta.visual[keep])
        n = positions.shape[1]
        self._make_room(n)
        window_positions = positions - p0 + s.window.next
        want_q = self.retention is not None and getattr(self.retention, "unit_queries", False)
        with capture(a.attention_layers(), q=want_q) as cap:
            a.forward(embeds, window_positions, s.window.cache, logits="none")
        self._peak("device", s.window.nbytes)
        d = a.head_dim
        keys = to_host(torch.stack([Capture.heads(k, d) for k in cap.k]))
        values = to_host(torch.stack([Capture.heads(v, d) for v in cap.v]))
        index = s._next_index
        block = Block(
            stream_id=s.stream_id, index=index, t_start=t0, t_end=t1, keys=keys, values=values,
            positions=positions.cpu(), pos_start=p0, pos_end=p1,
            rep_keys=keys.float().mean(dim=2).to(keys.dtype), meta={} if kind == "frames" else {"kind": kind},
        )
        s._next_index += 1
        s.retriever.observe(block, None)  # stage 6: retrieval policies with their own index
        if self.memory is None or c.demote:
            self._archive(block)
        if self.memory is not None and c.encode_on == "memory":
            s.window.next += block.extent
            s.window.tokens += block.n_tokens
        else:
            s.window.push(block)
        if self.memory is not None:
            info = UnitInfo(index, t0, t1, p0, p1, n, kind)
            self.memory.append(info, unit_layers(keys, values, positions.cpu(), index, meta))
            if want_q:
                self.unit_queries = ([Capture.heads(q, d).cpu() for q in cap.q], positions.cpu(), meta.visual)
        return index

    def _archive(self, block: Block) -> None:
        s = self.s
        if not s.stores_blocks:  # nothing reads it back (a window-only preset, engine-owned store)
            return
        if self.store_bytes is not None and self.store_used + block.nbytes > self.store_bytes:
            s._stats.units_dropped += 1  # the stream's store budget is spent: not written
            return
        s.store.put(block)
        self.store_used += block.nbytes
        self._peak("store", self.store_used)

    def _make_room(self, n: int) -> None:
        """Before a forward of n tokens: the encoder cache must stay within its byte budget,
        with room left for the policy's probe or caption that follows (`extra_tokens`)."""
        cap = self.device_cap()
        if cap is None:
            return
        n += self.extra_tokens
        if n > cap:
            raise EngineError("budget_too_small", f"a unit of {n} tokens does not fit the device budget "
                                                  f"({self.device_bytes} bytes)")
        s = self.s
        if self.memory is None or self.config.encode_on == "window":
            s.window.make_room(n, cap)
        elif max(self.memory.tokens, default=0) + n > cap:
            self._retain([], s._stats.last_frame_t or 0.0, budget=cap - n)

    def _retain(self, new: list[int], now: float, budget: int | None = None) -> None:
        memory, s, a = self.memory, self.s, self.s.adapter
        assert memory is not None and self.retention is not None
        cap = self.mem_tokens if budget is None else (budget if self.mem_tokens is None else min(budget, self.mem_tokens))
        queries = self.unit_queries if new else None
        ctx = RetainContext(
            budget=cap, new_units=new, now=now, n_heads=a.n_heads,
            unit_queries=queries[0] if queries else None, unit_positions=queries[1] if queries else None,
            unit_visual=queries[2] if queries else None,
            probe=self._probe, generate=self._generate, rotate=a.rotate, add_caption=self._add_caption,
        )
        before = memory.version
        tokens_before = sum(memory.tokens)
        self.retention.retain(memory, ctx)
        enforce_fifo(memory, cap, self.mem_bytes)
        self._trim_captions()
        s._stats.tokens_evicted += max(0, tokens_before - sum(memory.tokens))
        if self.config.encode_on == "memory" and memory.version != before:
            self._reload()
        self._peak("memory", self.memory_bytes())
        self.unit_queries = None

    def memory_bytes(self) -> int:
        m = self.memory.nbytes() if self.memory is not None else 0
        return m + sum(len(c.text.encode()) for c in self.s.captions)

    def _trim_captions(self) -> None:
        while self.mem_bytes is not None and self.s.captions and self.memory_bytes() > self.mem_bytes:
            self.s.captions.pop(0)

    def _reload(self) -> None:
        s = self.s
        s.window.load_memory(self.memory.view(), self.memory.units, self.layout, s.tracker.next)
        self._peak("device", s.window.nbytes)

    def _peak(self, tier: str, nbytes: int) -> None:
        peaks = self.s._stats.kv_peak_bytes
        peaks[tier] = max(peaks.get(tier, 0), int(nbytes))

    # -- what policies may ask the model (the session's model lock is held) -----------------
    def _probe(self, text: str) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Run `text` after the stream and forget it: pre-RoPE queries per layer [Hq, m, d] and
        their stream positions [P, m]."""
        s, a = self.s, self.s.adapter
        piece = [a.text_segment(text)]
        m = piece[0].n
        rows = s.tracker.rows
        wpos = torch.arange(m).view(1, -1).expand(rows, -1) + s.window.next
        with capture(a.attention_layers(), q=True, kv=False) as cap:
            a.forward(a.embed(piece), wpos, s.window.cache, logits="none")
        self._peak("device", s.window.nbytes)
        s.window.cache.crop(-m)
        self.extra_tokens = max(self.extra_tokens, m)
        d = a.head_dim
        return [Capture.heads(q, d).cpu() for q in cap.q], torch.arange(m).view(1, -1).expand(rows, -1) + s.tracker.next

    def _generate(self, prompt: str, max_tokens: int) -> tuple[list[int], str, list[torch.Tensor], torch.Tensor]:
        """Greedy text after the stream (rLiVS captions), then forgotten: the token ids, and the
        pre-RoPE queries of the generated tokens per layer [Hq, g, d] with stream positions."""
        s, a = self.s, self.s.adapter
        piece = [a.text_segment(prompt)]
        m = piece[0].n
        rows = s.tracker.rows
        cache = s.window.cache
        wpos = torch.arange(m).view(1, -1).expand(rows, -1) + s.window.next
        logits = a.forward(a.embed(piece), wpos, cache, logits="last")[0, -1]
        ids: list[int] = []
        per_layer: list[list[torch.Tensor]] = [[] for _ in range(a.n_layers)]
        d = a.head_dim
        fed = m
        for k in range(max_tokens):
            tok = int(logits.argmax())
            if tok in a.eos_ids:
                break
            ids.append(tok)
            pos = torch.full((rows, 1), s.window.next + m + k)
            emb = a.backbone.get_input_embeddings()(torch.tensor([[tok]], device=a.device))
            with capture(a.attention_layers(), q=True, kv=False) as cap:
                logits = a.forward(emb, pos, cache, logits="last")[0, -1]
            fed += 1
            for i, q in enumerate(cap.q):
                per_layer[i].append(Capture.heads(q, d).cpu())
        self._peak("device", s.window.nbytes)
        cache.crop(-fed)
        self.extra_tokens = max(self.extra_tokens, m + max_tokens)
        queries = [torch.cat(q, dim=1) if q else torch.zeros(a.n_heads, 0, d) for q in per_layer]
        positions = torch.arange(m, m + len(ids)).view(1, -1).expand(rows, -1) + s.tracker.next
        text = a.tokenizer.decode(ids, skip_special_tokens=True)
        return ids, text, queries, positions

    def _add_caption(self, t0: float, t1: float, text: str) -> None:
        self.s.captions.append(Caption(t0, t1, text))

    # -- stages 7-8 over the memory ----------------------------------------------------------
    def select(self, question: str, at: float | None) -> tuple[Selection, dict[int, tuple[float, float]], dict[str, int]]:
        """Which units each layer's answer cache holds, their times, and the tiers they came
        from. Units are the memory's (compact) or, with `demote`, their originals in the store."""
        s, c, memory = self.s, self.config, self.memory
        assert memory is not None
        n_layers = s.adapter.n_layers
        in_memory = {u: i for u, i in memory.units.items() if at is None or i.t_end <= at}
        times = {u: (i.t_start, i.t_end) for u, i in in_memory.items()}
        archived: dict[int, tuple[float, float]] = {}
        if c.demote:
            index = s.store.index(s.stream_id)
            whole = memory.whole_units()
            archived = {u: t for u, t in zip(index.indices, index.times, strict=True)
                        if u not in whole and (at is None or t[1] <= at)}
            rep_of = dict(zip(index.indices, index.rep_keys, strict=True)) if archived else {}
        times.update(archived)
        captions = [cap for cap in s.captions if at is None or cap.t_end <= at]
        retr = s.retriever
        self._originals: set[int] = set()
        if isinstance(retr, (AllBlocks, WindowOnly)) or not times:
            units = sorted(in_memory)
            sel = Selection([units] * n_layers, dict.fromkeys(units, 1.0), captions=captions)
        else:
            pool = sorted(archived) if c.keep_memory else sorted(set(in_memory) | set(archived))
            if pool or captions:  # caption retrievers (rLiVS MMR) run even without blocks
                mem_rep = self._rep_keys([u for u in pool if u not in archived])
                a = s.adapter
                rep = (torch.stack([rep_of[u] if u in archived else mem_rep[u] for u in pool]).to(torch.float32)
                       if pool else torch.zeros(0, a.n_layers, a.n_kv_heads, a.head_dim))
                sel = s._retrieve(question, at, candidates=(pool, rep, [times[u] for u in pool]))
            else:
                sel = Selection([[] for _ in range(n_layers)])
            picked = {u for row in sel.per_layer for u in row}
            if c.keep_memory:
                sel.per_layer = [sorted(set(in_memory) | set(row)) for row in sel.per_layer]
                for u in in_memory:
                    sel.layer_share.setdefault(u, 1.0)
            if not sel.captions and not any(sel.per_layer):
                sel.captions = captions
            self._originals = picked & set(archived)
        used = {u for row in sel.per_layer for u in row}
        tiers: dict[str, int] = {}
        for u in used:
            name = "memory" if u not in self._originals else str(getattr(s.store, "tier_of", lambda *_: "host")(s.stream_id, u))
            tiers[name] = tiers.get(name, 0) + 1
        return sel, times, tiers

    def _rep_keys(self, units: list[int]) -> dict[int, torch.Tensor]:
        """Mean retained pre-RoPE key of each unit, per layer and head: [L, H, d]."""
        layers = self.memory.view()
        out = {}
        for u in units:
            packed = self.memory.packed.get(u)
            if packed is not None and hasattr(packed, "rep"):  # OQM keeps the exact group key
                out[u] = packed.rep
                continue
            rows = []
            for layer in layers:
                m = (layer.unit == u).unsqueeze(-1).float()  # [H, n, 1]
                rows.append((layer.keys.float() * m).sum(1) / m.sum(1).clamp_min(1))
            out[u] = torch.stack(rows)
        return out

    def assemble(self, sel: Selection, at: float | None):
        """Stage 8: sink + per layer the chosen units (memory tokens, or originals brought back
        from the store) at original or contiguous positions, then the chosen captions."""
        s, a = self.s, self.s.adapter
        layers = self.memory.view(before=at)
        originals = sorted(self._originals)
        blocks = {b.index: b for b in s.store.get_many(s.stream_id, originals)} if originals else {}
        units = dict(self.memory.units)
        for b in blocks.values():
            units[b.index] = UnitInfo(b.index, b.t_start, b.t_end, b.pos_start, b.pos_end, b.n_tokens)
        out: list[LayerMemory] = []
        for i, (layer, chosen) in enumerate(zip(layers, sel.per_layer, strict=True)):
            chosen_set = set(chosen)
            present = set(layer.unit.unique().tolist()) if layer.n else set()
            layer = drop_units(layer, (present - chosen_set) | (chosen_set & set(blocks)))
            for u in sorted(chosen_set & set(blocks)):
                b = blocks[u]
                extra = unit_layers(b.keys[i:i + 1], b.values[i:i + 1], b.positions, u, TokenMeta.text(b.n_tokens))[0]
                layer = extra if layer.n == 0 else layer.cat(extra)
            out.append(sort_units(layer))
        keys, values, end = place_memory(a, s.window.sink, out, units, self.layout)
        cache = new_cache(a, keys, values)
        if sel.captions:
            end = self._prefill_captions(cache, sel.captions, end)
        return cache, end

    def _prefill_captions(self, cache, captions: list[Caption], end: int) -> int:
        from streamvqa.engine.window import prefill
        from streamvqa.policies.retrieval.rlivs import caption_text

        a = self.s.adapter
        piece = [a.text_segment(caption_text(captions))]
        tracker = self.s.tracker.fork(end)
        prefill(a, a.embed(piece), tracker.place(piece), cache)
        return tracker.next
