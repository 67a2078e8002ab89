"""One live stream: frames in, KV blocks out (stages 1-6), questions answered (stages 7-9).

Every preset runs through the same pipeline; a method is a choice of strategy objects
(docs/architecture.md has the diagram):

- unit builder (stage 1, `policies/units.py`): frames -> units (`UnitBatch`);
- reducer (stage 2, optional): fewer visual tokens per unit before the LLM;
- encode target (stage 3, `engine/targets.py`): the hot window, or the retained memory;
- retainer (stage 5, `policies/retainer.py`, optional): the retention policy and budgets;
- retriever (stages 6-7, `policies/retrieval/`): indexes blocks, picks them per layer;
- layout (stage 8, `engine/layout.py`): where the chosen blocks sit in the answer cache.

Encoding goes through public phases, in order (a batched encoder may run `forward_unit` for
several streams' units together, as long as each stream's phases stay in order):

1. `units.push(image, t)` / `units.flush()`: the unit builder closes units into batches;
2. `prepare(unit)`: model inputs: positions placed on the stream, embeddings, pre-LLM
   reduction, room made in the encoder cache (device budget) -> `EncodeInputs`;
3. `forward_unit(inputs)`: the model runs the unit on the target's cache, capturing its
   pre-RoPE keys and values (and queries, for policies that score with them) -> `Encoded`;
4. `commit(inputs, encoded)`: the block is written: store (within its budget), retriever
   index, encode target, retained memory;
5. `retain(new, now)`: after a batch, the retention policy and budgets compact the memory.

`encode(batch)` runs phases 2-5 for a batch under the model lock and counts it; `push_frame`
and `flush` feed the builder and encode what it closes. Phases 2-5 expect the model lock held.
Answering: `answer` / `ask` (and `answer_events`) flush the open unit, select (`select`),
assemble the answer cache (`assemble`), prefill the question and generate.
"""

from __future__ import annotations

import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
import torch
from transformers import DynamicCache

from streamvqa.answering.tier_counts import spans as tier_spans
from streamvqa.engine.capture import Capture, capture, to_host
from streamvqa.engine.errors import EngineError
from streamvqa.engine.inputs import InputMemory, UnitInputs
from streamvqa.engine.layout import layout_for
from streamvqa.engine.protocols import final_answer, stream_in_thread
from streamvqa.engine.sampling import TextStream, next_token
from streamvqa.engine.targets import MemoryTarget, WindowTarget
from streamvqa.engine.types import Answer, SessionStats, TokenEvent
from streamvqa.engine.window import HotWindow, Sink, cache_bytes, new_cache, place, place_memory, prefill
from streamvqa.models.base import ModelAdapter, Piece
from streamvqa.policies.memory import TokenMeta, UnitInfo
from streamvqa.policies.presets import MethodConfig
from streamvqa.policies.retainer import Retainer
from streamvqa.policies.retrieval.base import (
    Caption,
    RetrievalContext,
    Retriever,
    Selection,
    WindowOnly,
    caption_text,
)
from streamvqa.policies.units import Unit, UnitBatch
from streamvqa.store.base import BlockStore, MemoryStore, StreamIndex
from streamvqa.store.block import Block


@dataclass(eq=False)  # identity: a weak set tracks the live ones
class Assembled:
    """An answer cache: the sink and the retrieved blocks, before any question token."""

    key: tuple  # the per-layer selection it was built from
    cache: DynamicCache
    length: int
    end: int  # next position after the blocks, contiguous layout
    sink: int = 0  # tokens of the sink, then `blocks`: (index, tokens) in cache order (retrieved blocks)
    blocks: list[tuple[int, int]] = field(default_factory=list)
    spans: list[list] | None = None  # [[tier, tokens], ...] in cache order (answering/tier_counts.py)


@dataclass
class EncodeInputs:
    """A unit ready for the model: its embeddings at their window positions (phase 2)."""

    unit: Unit
    embeds: torch.Tensor  # [1, n, hidden]
    positions: torch.Tensor  # [P, n] stream positions
    window_positions: torch.Tensor  # [P, n] positions in the encoder cache
    pos_start: int
    pos_end: int
    meta: TokenMeta | None  # where each token comes from (retention, reduction), after reduction


@dataclass
class Encoded:
    """What a forward captured (phase 3): pre-RoPE keys/values [L, H, n, d] on the host."""

    keys: torch.Tensor
    values: torch.Tensor
    queries: list[torch.Tensor] | None = None  # per layer [Hq, n, d], when the retainer scores with them


class StreamSession:
    """One stream through the one pipeline (module docstring). Public interface: `push_frame`,
    `flush`, `answer` / `ask` / `answer_events`, `stats`, `block_index`, `get_blocks`, `close`;
    the encode phases `prepare` -> `forward_unit` -> `commit` (-> `retain`), run by `encode`;
    `next_index`, `replicable` and `restore` for processes that rebuild a stream from the store."""
    # stage 9 elsewhere (streamvqa/answering: the vllm engine), set by the engine; None: this
    # process's model
    answerer = None

    def __init__(
        self,
        stream_id: str,
        adapter: ModelAdapter,
        store: BlockStore,
        method: str,
        config: MethodConfig,
        lock: threading.Lock,
        observers: list,
        max_question_chars: int = 2000,
        max_new_tokens: int = 512,
        store_all: bool = True,
    ) -> None:
        self.stream_id = stream_id
        self.adapter = adapter
        self.store = store
        self.method = method
        self.config = config
        self.retriever = config.retriever()
        # a preset that answers from the window alone (sliding-window) never reads a stored block
        # back: unless another process rebuilds the window from the store (`store_all`), its
        # blocks live only in the window and leave memory with it
        self.stores_blocks = store_all or not isinstance(self.retriever, WindowOnly)
        self.captions: list[Caption] = []  # text memory, time order (written by caption retention)
        # every unit's LM inputs, for answers recomputed from them or retrieval that scores them
        self.inputs = InputMemory() if config.answer_from == "inputs" or self.retriever.needs_inputs else None
        self.lock = lock  # the engine's model lock, held per forward call
        self.observers = observers
        self.max_question_chars = max_question_chars
        self.max_new_tokens = max_new_tokens
        self.tracker = adapter.new_positions()
        self.window = HotWindow(adapter, config.n_local)
        self._push_lock = threading.Lock()  # frames of one stream are encoded in order
        self._stats = SessionStats(method=method)
        self._next_index = 0
        self._assembled: Assembled | None = None  # the last answer cache, reused by a follow-up
        # every answer cache alive: the kept one and those of answers in flight (counted as KV)
        self._answer_caches: weakref.WeakSet[Assembled] = weakref.WeakSet()
        self._answer_caches_lock = threading.Lock()
        self.closed = False
        self.nonce = uuid.uuid4().hex  # tells this session's memories from a reopened stream's
        with self.lock, torch.inference_mode():
            self._encode_prefix()
        # the strategies (policies/): stage 1 units, 2 reduction, 3 target, 5 retention
        self.reducer = config.reducer()
        # the builder's vision holds the adapter and lock, not the session: no reference cycle
        self.units = config.unit_builder(partial(vision_piece, adapter, lock))
        es = torch.empty(0, dtype=adapter.dtype).element_size()
        self.token_bytes = 2 * adapter.n_kv_heads * adapter.head_dim * es * adapter.n_layers  # K+V, all layers
        budgets = config.budget_bytes
        self.device_bytes, self.store_bytes = budgets.get("device"), budgets.get("store")
        self.store_used = 0
        self.extra_tokens = 0  # tokens a policy's probe or caption adds to the cache for a moment
        policy = config.retention_policy()
        self.retainer: Retainer | None = None
        if policy is not None:
            mem_bytes, mem_tokens = budgets.get("memory"), config.memory_tokens
            if mem_bytes is not None:
                cap = mem_bytes // self.token_bytes
                mem_tokens = cap if mem_tokens is None else min(mem_tokens, cap)
            self.retainer = Retainer(policy, mem_tokens, mem_bytes, adapter.rotate, adapter.n_heads,
                                     keep_memory=config.keep_memory)
            scratch = policy.scratch()
            if scratch is not None:  # room for the policy's probe from the first unit on
                self.extra_tokens = adapter.text_segment(scratch[0]).n + scratch[1]
        on_memory = self.retainer is not None and config.encode_on == "memory"
        self.target = MemoryTarget(self.window) if on_memory else WindowTarget(self.window)
        # the retained memory is laid out at original or contiguous positions (time-aware: contiguous)
        self.memory_layout = "original" if config.positions == "original" else "contiguous"
        if self.device_bytes is not None:  # the window's spare room counts against its budget too
            self.window.set_limit(self.window.sink.n_tokens + self.device_cap())

    @property
    def next_index(self) -> int:
        """Index the next block will get (= blocks written so far, or resumed after)."""
        return self._next_index

    @property
    def replicable(self) -> bool:
        """Whether the store holds all of the stream's state, so a session rebuilt from stored
        blocks (`engine/replica.py`) answers exactly as this one. Not so with a retained memory,
        frame-level units, reduction or byte budgets, nor with a retriever that indexes what it
        is shown (rekv-external): those questions are answered by the session that encoded."""
        stateful_retriever = type(self.retriever).observe is not Retriever.observe
        return not (stateful_retriever or self.retainer is not None or self.reducer is not None
                    or self.units.frame_level or bool(self.config.budget_bytes) or self.inputs is not None)

    def restore(self, window_blocks: list[Block], next_index: int) -> None:
        """Resume from stored blocks: the window holds `window_blocks` (oldest first, laid out
        contiguously after the sink), the next block gets `next_index`. Model lock held."""
        self._next_index = next_index
        if window_blocks:
            self.window.replace(window_blocks)
            self.tracker.next = window_blocks[-1].pos_end

    # -- stages 1-6: online encoding ---------------------------------------------------------
    def _encode_prefix(self) -> None:
        piece = self.adapter.prefix_piece()
        positions = self.tracker.place(piece)
        with capture(self.adapter.attention_layers()) as cap:
            self.adapter.forward(self.adapter.embed(piece), positions, new_cache(self.adapter, [], []), logits="none")
        d = self.adapter.head_dim
        keys = torch.stack([Capture.heads(k, d) for k in cap.k])
        values = torch.stack([Capture.heads(v, d) for v in cap.v])
        self.window.set_sink(Sink(keys, values, positions, self.tracker.next))

    def push_frame(self, image: np.ndarray, t: float) -> None:
        """Accept one decoded frame (HxWx3 uint8 RGB) at presentation time t (seconds)."""
        if self.closed:
            raise EngineError("stream_closed", f"stream {self.stream_id} is closed")
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise EngineError("invalid_frame", f"frames must be HxWx3 uint8, got {image.shape} {image.dtype}")
        with self._push_lock:
            self._stats.frames_received += 1
            self._stats.last_frame_t = float(t)
            for batch in self.units.push(image, float(t)):
                self.encode(batch)

    def flush(self) -> None:
        """Encode the frames of a unit still open (end of stream; a question does this itself)."""
        with self._push_lock:
            for batch in self.units.flush():
                self.encode(batch)

    def encode(self, batch: UnitBatch) -> None:
        """Phases 2-5 for a batch of units (a segment and its summary), then the counters."""
        start = time.perf_counter()
        new = []
        with self.lock, torch.inference_mode():
            for unit in batch.units:
                new.append(self.commit(*self.forward_unit(self.prepare(unit))).index)
            if self.retainer is not None and new:
                self.retain(new, batch.units[-1].t1)
        seconds = time.perf_counter() - start
        st = self._stats
        st.frames_encoded += batch.n_frames
        st.units_encoded += len(batch.units)
        st.encode_seconds_total += seconds
        for obs in self.observers:
            obs.on_unit_encoded(self.stream_id, seconds, batch.n_frames)

    def prepare(self, unit: Unit) -> EncodeInputs:
        """Phase 2: place the unit on the stream, embed it, reduce it before the LLM, and make
        room for it in the encoder cache."""
        a = self.adapter
        p0 = self.tracker.next
        positions = self.tracker.place(unit.piece)
        p1 = self.tracker.next
        embeds = a.embed(unit.piece)
        meta = unit.token_meta() if self.retainer is not None or self.reducer is not None else None
        if self.reducer is not None and unit.kind == "frames":
            reduced, keep = self.reducer.reduce_unit(embeds[0], meta)
            embeds, positions = reduced.unsqueeze(0).to(embeds.dtype), positions[:, keep]
            meta = TokenMeta(meta.frame[keep], meta.patch[keep], meta.visual[keep])
        self.make_room(positions.shape[1])
        return EncodeInputs(unit, embeds, positions, positions - p0 + self.window.next, p0, p1, meta)

    def forward_unit(self, inputs: EncodeInputs) -> tuple[EncodeInputs, Encoded]:
        """Phase 3: run the unit on the target's cache; its pre-RoPE keys and values."""
        a = self.adapter
        want_q = self.retainer is not None and self.retainer.wants_unit_queries
        with capture(a.attention_layers(), q=want_q) as cap:
            a.forward(inputs.embeds, inputs.window_positions, self.window.cache, logits="none")
        self._peak("device", self.window.nbytes)
        d = a.head_dim
        keys = to_host(torch.stack([Capture.heads(k, d) for k in cap.k]))
        values = to_host(torch.stack([Capture.heads(v, d) for v in cap.v]))
        queries = [Capture.heads(q, d).cpu() for q in cap.q] if want_q else None
        return inputs, Encoded(keys, values, queries)

    def commit(self, inputs: EncodeInputs, out: Encoded) -> Block:
        """Phase 4: the unit's block, written to the store (all of them, or the originals of a
        retained memory with `demote`), the retriever's index, the encode target, the memory."""
        unit, keys = inputs.unit, out.keys
        block = Block(
            stream_id=self.stream_id, index=self._next_index, t_start=unit.t0, t_end=unit.t1, keys=keys,
            values=out.values, positions=inputs.positions.cpu(), pos_start=inputs.pos_start,
            pos_end=inputs.pos_end, rep_keys=keys.float().mean(dim=2).to(keys.dtype),
            meta={} if unit.kind == "frames" else {"kind": unit.kind},
        )
        self._next_index += 1
        self.retriever.observe(block, unit.frames)  # stage 6: retrieval policies with their own index
        if self.retainer is None or self.config.demote:
            self.archive(block)
        if self.inputs is not None:
            self.inputs.add(block.index, UnitInputs(inputs.embeds[0].detach().cpu(), block.positions, inputs.pos_start,
                                                    inputs.pos_end, unit.t0, unit.t1, block.rep_keys))
            if self.store_bytes is not None:  # kept inputs count against the store budget, oldest dropped first
                self.inputs.evict_to(max(0, self.store_bytes - self.store_used))
                self._peak("store", self.store_used + self.inputs.nbytes())
        self.target.commit(block)
        if self.retainer is not None:
            info = UnitInfo(block.index, unit.t0, unit.t1, inputs.pos_start, inputs.pos_end, block.n_tokens, unit.kind)
            self.retainer.append(block, info, inputs.meta, out.queries)
        return block

    def archive(self, block: Block) -> None:
        """Write a block to the store, within the stream's store byte budget."""
        if not self.stores_blocks:  # nothing reads it back (a window-only preset, engine-owned store)
            return
        if self.store_bytes is not None and self.store_used + block.nbytes > self.store_bytes:
            self._stats.units_dropped += 1  # the stream's store budget is spent: not written
            return
        self.store.put(block)
        self.store_used += block.nbytes
        self._peak("store", self.store_used)

    def retain(self, new: list[int], now: float, budget: int | None = None) -> None:
        """Phase 5: the retention policy and budgets over the memory; a memory target reloads
        its cache when the memory changed."""
        assert self.retainer is not None
        changed, evicted = self.retainer.retain(new, now, self.captions, self.probe, self.generate, budget)
        self._stats.tokens_evicted += evicted
        if changed and self.target.memory_changed(self.retainer.memory, self.memory_layout, self.tracker.next):
            self._peak("device", self.window.nbytes)
        self._peak("memory", self.retainer.nbytes(self.captions))

    def device_cap(self) -> int | None:
        """Tokens the encoder cache may hold besides the sink (the device byte budget)."""
        if self.device_bytes is None:
            return None
        sink_bytes = self.token_bytes * self.window.sink.n_tokens
        return max(0, (self.device_bytes - sink_bytes) // self.token_bytes)

    def make_room(self, n: int) -> None:
        """Before a forward of n tokens: the encoder cache must stay within its byte budget,
        with room left for the policy's probe or caption that follows (`extra_tokens`)."""
        cap = self.device_cap()
        if cap is None:
            return
        n += self.extra_tokens
        if n > cap:
            raise EngineError("budget_too_small", f"a unit of {n} tokens does not fit the device budget "
                                                  f"({self.device_bytes} bytes)")
        if self.retainer is None or not self.target.on_memory:
            self.window.make_room(n, cap)
        elif max(self.retainer.memory.tokens, default=0) + n > cap:
            self.retain([], self._stats.last_frame_t or 0.0, budget=cap - n)

    def _peak(self, tier: str, nbytes: int) -> None:
        peaks = self._stats.kv_peak_bytes
        peaks[tier] = max(peaks.get(tier, 0), int(nbytes))

    # -- what retention policies may ask the model (the model lock is held) -----------------
    def probe(self, text: str) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Run `text` after the stream and forget it: pre-RoPE queries per layer [Hq, m, d] and
        their stream positions [P, m]."""
        a = self.adapter
        piece = [a.text_segment(text)]
        m = piece[0].n
        rows = self.tracker.rows
        wpos = torch.arange(m).view(1, -1).expand(rows, -1) + self.window.next
        with capture(a.attention_layers(), q=True, kv=False) as cap:
            a.forward(a.embed(piece), wpos, self.window.cache, logits="none")
        self._peak("device", self.window.nbytes)
        self.window.cache.crop(-m)
        self.extra_tokens = max(self.extra_tokens, m)
        d = a.head_dim
        return [Capture.heads(q, d).cpu() for q in cap.q], torch.arange(m).view(1, -1).expand(rows, -1) + self.tracker.next

    def generate(self, prompt: str, max_tokens: int) -> tuple[list[int], str, list[torch.Tensor], torch.Tensor]:
        """Greedy text after the stream (rLiVS captions), then forgotten: the token ids, and the
        pre-RoPE queries of the generated tokens per layer [Hq, g, d] with stream positions."""
        a = self.adapter
        piece = [a.text_segment(prompt)]
        m = piece[0].n
        rows = self.tracker.rows
        cache = self.window.cache
        wpos = torch.arange(m).view(1, -1).expand(rows, -1) + self.window.next
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
            pos = torch.full((rows, 1), self.window.next + m + k)
            emb = a.backbone.get_input_embeddings()(torch.tensor([[tok]], device=a.device))
            with capture(a.attention_layers(), q=True, kv=False) as cap:
                logits = a.forward(emb, pos, cache, logits="last")[0, -1]
            fed += 1
            for i, q in enumerate(cap.q):
                per_layer[i].append(Capture.heads(q, d).cpu())
        self._peak("device", self.window.nbytes)
        cache.crop(-fed)
        self.extra_tokens = max(self.extra_tokens, m + max_tokens)
        queries = [torch.cat(q, dim=1) if q else torch.zeros(a.n_heads, 0, d) for q in per_layer]
        positions = torch.arange(m, m + len(ids)).view(1, -1).expand(rows, -1) + self.tracker.next
        text = a.tokenizer.decode(ids, skip_special_tokens=True)
        return ids, text, queries, positions

    def stats(self) -> SessionStats:
        s = self._stats
        s.frames_merged = self.units.frames_merged
        s.window_tokens = self.window.tokens
        s.kv_bytes = {"device": self.window.nbytes, **self.store.bytes_by_tier(self.stream_id)}
        window_blocks = self._window_block_bytes()
        if window_blocks:
            s.kv_bytes["window"] = window_blocks
        # answer caches (the one kept for a follow-up, those of answers in flight): the sink, the
        # retrieved blocks (at most topk per layer) or the retained memory, and spare room; bounded,
        # but KV memory the stream holds (docs/benchmarks.md, "Soak")
        with self._answer_caches_lock:
            caches = [a.cache for a in self._answer_caches]
        if caches:
            s.kv_bytes["answer"] = sum(cache_bytes(c) for c in caches)
        s.kv_blocks = {"window": len(self.window.blocks), **self.store.blocks_by_tier(self.stream_id)}
        if self.inputs is not None:  # not KV, but the stream's memory: what an answer recomputes from
            s.kv_bytes["inputs"] = self.inputs.nbytes()
        if self.retainer is not None:
            s.kv_bytes["memory"] = self.retainer.nbytes(self.captions)
            s.kv_blocks["memory"] = len(self.retainer.memory.units)
            s.memory_tokens = self.retainer.memory.tokens
        return s

    def _window_block_bytes(self) -> int:
        """Host bytes of the pre-RoPE blocks the hot window keeps to re-rotate itself when units
        leave (bounded by `n_local`). With an engine-owned `MemoryStore` they are the very objects
        the store counts; any other store holds its own copy, so they are memory of their own."""
        if self.stores_blocks and isinstance(self.store, MemoryStore):
            return 0
        return sum(b.nbytes for b in self.window.blocks)

    @property
    def answer_cache(self) -> Assembled | None:
        """The answer cache kept for a follow-up question (None while an answer owns it)."""
        return self._assembled

    # -- stages 7-9: answering ---------------------------------------------------------------
    def _check(self, question: str, max_tokens: int, temperature: float, top_p: float) -> None:
        if not isinstance(question, str) or not question.strip():
            raise EngineError("invalid_request", "question must be a non-empty string")
        if len(question) > self.max_question_chars:
            raise EngineError("question_too_long", f"question has {len(question)} characters; limit {self.max_question_chars}")
        if not 1 <= max_tokens <= self.max_new_tokens:
            raise EngineError("invalid_request", f"max_tokens must be in [1, {self.max_new_tokens}]")
        if temperature < 0 or not 0 < top_p <= 1:
            raise EngineError("invalid_request", "temperature must be >= 0 and top_p in (0, 1]")
        if self._next_index == 0:
            raise EngineError("empty_stream", f"stream {self.stream_id} has no encoded frames yet")

    def question_query(self, question: str) -> torch.Tensor:
        """The question run over the hot window and forgotten: its mean pre-RoPE query per layer
        [layers, heads * head_dim] (model lock held)."""
        piece = [self.adapter.text_segment(question)]
        positions = torch.arange(piece[0].n).view(1, -1).expand(self.tracker.rows, -1) + self.window.next
        cache = self.window.cache
        with capture(self.adapter.attention_layers(), q=True, kv=False) as cap:
            self.adapter.forward(self.adapter.embed(piece), positions, cache, logits="none")
        cache.crop(-piece[0].n)  # the question leaves no trace in the stream's window
        return torch.stack([q[0].float().mean(0) for q in cap.q]).cpu()

    def choose(self, question: str, ids: list[int], rep: torch.Tensor | None, times: list[tuple[float, float]],
               ) -> Selection:
        """Stage 7: the retriever's per-layer choice among candidate blocks (ids in time order,
        their representative keys [n, L, H, d] and times); the question is run only if the
        retriever looks at its query."""
        a = self.adapter
        if rep is None:
            rep = torch.zeros(0, a.n_layers, a.n_kv_heads, a.head_dim)
        window_ids = [i for i in self.window.block_ids if i in set(ids)]
        query = torch.zeros(a.n_layers, a.n_heads * a.head_dim)
        if self.retriever.needs_query(len(ids)):
            query = self.question_query(question)
        ctx = RetrievalContext(query=query, rep_keys=rep, block_ids=ids, window_ids=window_ids, question=question,
                               times=times, captions=list(self.captions), embed_text=self.embed_text)
        if self.retriever.needs_inputs and self.inputs is not None:
            ctx.inputs = self.inputs.embeds(ids)
            ctx.question_inputs = a.embed([a.text_segment(question)])[0].cpu()
        return self.retriever.select(ctx)

    def select(self, question: str, at: float | None) -> tuple[Selection, dict[int, tuple[float, float]]]:
        """Stage 7: which blocks (or retained units) each layer's answer cache holds, and their
        times: the store's blocks encoded by `at`, or the retained memory and its demoted
        originals (model lock held)."""
        if self.retainer is not None:
            # units retention dropped come back from the store (demote) or from their inputs
            archived = self.store.index(self.stream_id) if self.config.demote else \
                self.inputs.index() if self.config.answer_from == "inputs" else None
            return self.retainer.select(self.retriever, lambda ids, rep, times: self.choose(question, ids, rep, times),
                                        self.adapter.n_layers, at, self.captions, archived)
        index = self.block_index()
        ids, rep, times = index.indices, index.rep_keys, index.times
        if at is not None:
            keep = [i for i, (_, t1) in enumerate(times) if t1 <= at]
            if not keep:
                raise EngineError("empty_stream", f"nothing was encoded before t={at}")
            ids, rep, times = [ids[i] for i in keep], rep[keep], [times[i] for i in keep]
        return self.choose(question, ids, rep, times), dict(zip(ids, times, strict=True))

    def answer_events(
        self, question: str, max_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
        at: float | None = None, seed: int | None = None,
    ) -> Iterator[TokenEvent | Answer]:
        """Answer synchronously: the tokens as they come, then the Answer (blocking iterator)."""
        self.flush()  # a question closes the open unit: it must see every frame
        self._check(question, max_tokens, temperature, top_p)
        timings: dict[str, float] = {}
        start = time.perf_counter()
        adapter = self.adapter
        with self.lock, torch.inference_mode():
            timings["queue_s"] = time.perf_counter() - start
            t = time.perf_counter()
            chosen, times = self.select(question, at)
            selection = chosen.per_layer
            wanted = sorted({i for layer in selection for i in layer})
            if self.config.answer_from == "inputs":
                wanted = [i for i in wanted if i in self.inputs.units]  # dropped by the store budget: not read
            where = self._where(wanted, chosen)  # where the blocks were before retrieval promoted them
            tiers = count_tiers(where)
            key = (tuple(tuple(layer) for layer in selection), tuple(chosen.captions))
            if self.retainer is not None:
                key = (key, self.retainer.memory.version, at)
            assembled, self._assembled = self._assembled, None  # owned by this answer until it ends
            reused = assembled is not None and assembled.key == key
            if not reused:
                assembled = self.assemble(key, chosen, wanted, at)
            # the memory's layout by tier, for the vLLM connector's per-tier counts (tier_counts.py)
            assembled.spans = tier_spans(assembled.sink, [(where.get(i, "memory"), n) for i, n in assembled.blocks]) \
                if self.retainer is None else [["memory", assembled.length]]
            with self._answer_caches_lock:
                self._answer_caches.add(assembled)
            timings["retrieval_s"] = time.perf_counter() - t
            t = time.perf_counter()
            cache = assembled.cache
            end = max(assembled.end, self.tracker.next) if self.config.positions == "original" else assembled.end
            tracker = self.tracker.fork(end)
            piece = adapter.question_piece(question)
            remote = None if self.answerer is None else self.answerer.start(
                self, assembled, end, piece, max_tokens, temperature, top_p, seed)
            if remote is None:
                logits = prefill(adapter, adapter.embed(piece), tracker.place(piece), cache)[0, -1]
            timings["prefill_s"] = time.perf_counter() - t
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        stream = TextStream(adapter.tokenizer)
        ids: list[int] = []
        finish = "length"
        last = time.perf_counter()
        for k in range(max_tokens):
            tok = next_token(logits, temperature, top_p, gen) if remote is None else next(remote, None)
            if tok is None or tok in adapter.eos_ids:
                finish = "stop"
                break
            ids.append(tok)
            now = time.perf_counter()
            if k == 0:
                timings["first_token_s"] = now - start
            else:  # ITL counts gaps between tokens only (vLLM); the first token is TTFT
                for obs in self.observers:
                    obs.on_token(self.stream_id, now - last)
            last = now
            yield TokenEvent(stream.push(tok), tok, k)
            if k + 1 == max_tokens or remote is not None:
                continue
            with self.lock, torch.inference_mode():
                pos = torch.full((tracker.rows, 1), tracker.next)
                tracker.next += 1
                emb = adapter.backbone.get_input_embeddings()(torch.tensor([[tok]], device=adapter.device))
                logits = adapter.forward(emb, pos, cache, logits="last")[0, -1]
        with self.lock:  # roll the cache back to the retrieved blocks for a follow-up question
            if cache.get_seq_length() > assembled.length:
                cache.crop(-(cache.get_seq_length() - assembled.length))
            self._assembled = assembled
        timings.setdefault("first_token_s", time.perf_counter() - start)
        timings["total_s"] = time.perf_counter() - start
        answer = Answer(
            text=adapter.tokenizer.decode(ids, skip_special_tokens=True).strip(),
            token_ids=ids,
            evidence=merge_ranges([times[i] for i in wanted]),
            timings=timings,
            finish_reason=finish,
            tiers=tiers,
            blocks_per_layer=selection,
            evidence_scores=[
                {"t_start": times[i][0], "t_end": times[i][1], "layers": chosen.layer_share.get(i, 1.0),
                 "score": chosen.score.get(i)}
                for i in wanted
            ],
            retrieved_blocks=chosen.size,
            reused_cache=reused,
        )
        for obs in self.observers:
            obs.on_answer(self.stream_id, answer)
        yield answer

    _answer_iter = answer_events  # the name the multi-process workers still call

    def assemble(self, key: tuple, chosen: Selection, wanted: list[int], at: float | None) -> Assembled:
        """Stage 8: the answer cache: the sink, per layer the chosen blocks (any tier) or retained
        units at the layout's positions, then the retrieved captions (text memory) in time order."""
        a = self.adapter
        if self.config.answer_from == "inputs":
            return self.recompute(key, chosen, wanted)
        if self.retainer is not None:
            originals = {b.index: b for b in self.store.get_many(self.stream_id, chosen.originals)} \
                if chosen.originals else {}
            layers, units = self.retainer.answer_layers(chosen, at, originals)
            keys, values, end = place_memory(a, self.window.sink, layers, units, self.memory_layout)
        else:
            blocks = {b.index: b for b in self.get_blocks(wanted)}
            # layers may hold different numbers of tokens (StreamKV's per-layer sizes): `prefill`
            # runs such ragged caches one token at a time, so each layer keeps its own selection
            per_layer = [[blocks[i] for i in layer] for layer in chosen.per_layer]
            layout = layout_for(self.config.positions, self.config.time_gap_scale, self.config.time_max_gap)
            laid = [layout(bl, self.window.sink.end, self.tracker.next) for bl in per_layer]
            keys, values = place(a, self.window.sink, per_layer, [p for p, _ in laid])
            end = max(e for _, e in laid)
        cache = new_cache(a, keys, values)
        if chosen.captions:
            piece = [a.text_segment(caption_text(chosen.captions))]
            tracker = self.tracker.fork(end)
            prefill(a, a.embed(piece), tracker.place(piece), cache, logits="none")
            end = tracker.next
        order = [] if self.retainer is not None else [(b.index, int(b.keys.shape[-2])) for b in per_layer[0]]
        return Assembled(key, cache, cache.get_seq_length(), end, self.window.sink.n_tokens, order)

    def recompute(self, key: tuple, chosen: Selection, wanted: list[int]) -> Assembled:
        """Stage 8 from inputs: the sink, then the chosen units (every layer's choices, in time
        order) prefilled afresh at contiguous positions, then the retrieved captions."""
        a = self.adapter
        assert self.inputs is not None
        keys, values = place(a, self.window.sink, [[] for _ in range(a.n_layers)], None)
        cache = new_cache(a, keys, values)
        embeds, positions, order, end = self.inputs.laid_out(wanted, self.window.sink.end)
        pieces = [] if not order else [(embeds.to(a.device, a.dtype), positions)]
        if chosen.captions:
            piece = [a.text_segment(caption_text(chosen.captions))]
            tracker = self.tracker.fork(end)
            pieces.append((a.embed(piece), tracker.place(piece)))
            end = tracker.next
        if pieces:
            prefill(a, torch.cat([e for e, _ in pieces], dim=1), torch.cat([p for _, p in pieces], dim=1), cache,
                    logits="none")
        return Assembled(key, cache, cache.get_seq_length(), end, self.window.sink.n_tokens, order)

    def embed_text(self, texts: list[str]) -> tuple[torch.Tensor, list[int]]:
        """Mean LM input embedding and token count of each text (rLiVS's caption index)."""
        table = self.adapter.backbone.get_input_embeddings()
        segs = [self.adapter.text_segment(t) for t in texts]
        embs = [table(s.ids.to(self.adapter.device)).float().mean(0) if s.n else torch.zeros(table.embedding_dim)
                for s in segs]
        return torch.stack(embs).cpu(), [s.n for s in segs]

    def block_index(self) -> StreamIndex:
        """The blocks retrieval may choose from: the store's, or the window's when nothing is stored."""
        if self.stores_blocks:
            return self.store.index(self.stream_id)
        blocks = list(self.window.blocks)
        if not blocks:
            return StreamIndex([], torch.empty(0), [])
        return StreamIndex([b.index for b in blocks], torch.stack([b.rep_keys for b in blocks]),
                           [(b.t_start, b.t_end) for b in blocks])

    def get_blocks(self, indices: list[int]) -> list[Block]:
        if self.stores_blocks:
            return self.store.get_many(self.stream_id, indices)
        window = {b.index: b for b in self.window.blocks}
        return [window[i] for i in indices]

    def _where(self, indices: list[int], chosen: Selection) -> dict[int, str]:
        """Where each used block or unit was: the retained memory, the window, or a store tier."""
        if self.config.answer_from == "inputs":
            return dict.fromkeys(indices, "inputs")
        if self.retainer is None and not self.stores_blocks:
            return dict.fromkeys(indices, "window")
        stored = set(indices) if self.retainer is None else set(chosen.originals) & set(indices)
        tier_of = getattr(self.store, "tier_of", None)
        return {i: (str(tier_of(self.stream_id, i)) if tier_of is not None else getattr(self.store, "tier", "host"))
                if i in stored else "memory" for i in sorted(indices)}

    # -- the Session protocol (engine/protocols.py) -------------------------------------------
    def events(self, question: str, *, max_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
               at: float | None = None, seed: int | None = None) -> Generator[TokenEvent | Answer, None, None]:
        """Tokens, then the Answer (blocking); closing it early abandons the question."""
        return self.answer_events(question, max_tokens=max_tokens, temperature=temperature, top_p=top_p, at=at,
                                 seed=seed)

    def answer(self, question: str, *, max_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
               at: float | None = None, seed: int | None = None) -> Answer:
        """Answer synchronously (blocking)."""
        return final_answer(self.events(question, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                        at=at, seed=seed))

    def ask(self, question: str, *, max_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
            at: float | None = None, seed: int | None = None) -> AsyncIterator[TokenEvent | Answer]:
        """Stream tokens, then the Answer. Model work runs in a thread: the loop never blocks."""
        # the vllm engine brings threads for its questions in flight (the loop's default executor
        # has a handful, which would cap how many questions vLLM batches)
        return stream_in_thread(self.events(question, max_tokens=max_tokens, temperature=temperature,
                                            top_p=top_p, at=at, seed=seed),
                                getattr(self.answerer, "executor", None))

    def counters(self) -> SessionStats:
        """A copy of the frame and unit counters, without `stats()`'s byte accounting (which asks
        the store)."""
        return replace(self._stats)

    def close(self) -> None:
        self.closed = True
        self.store.drop_stream(self.stream_id)


def count_tiers(where: dict[int, str]) -> dict[str, int]:
    """How many blocks or units were where (the answer's `tiers`)."""
    out: dict[str, int] = {}
    for name in where.values():
        out[name] = out.get(name, 0) + 1
    return out


def vision_piece(adapter: ModelAdapter, lock: threading.Lock, frames: list[np.ndarray], t0: float) -> Piece:
    """The model's tokens for frames starting at t0 (a unit builder's vision), under the model lock."""
    with lock, torch.inference_mode():
        return adapter.unit_piece(frames, t0)


def merge_ranges(ranges: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Time ranges sorted and merged where they touch (consecutive units)."""
    out: list[tuple[float, float]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1e-9:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
