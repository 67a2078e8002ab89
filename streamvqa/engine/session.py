"""One live stream: frames in, KV blocks out (stages 1-6), questions answered (stages 7-9)."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch
from transformers import DynamicCache

from streamvqa.engine.capture import Capture, capture, to_host
from streamvqa.engine.errors import EngineError
from streamvqa.engine.layout import layout_for
from streamvqa.engine.protocols import final_answer, stream_in_thread
from streamvqa.engine.sampling import TextStream, next_token
from streamvqa.engine.types import Answer, SessionStats, TokenEvent
from streamvqa.engine.window import HotWindow, Sink, cache_bytes, new_cache, place, prefill
from streamvqa.models.base import ModelAdapter, Piece, piece_len
from streamvqa.policies import stages  # module import: stages imports engine modules too
from streamvqa.policies.presets import MethodConfig
from streamvqa.policies.retrieval.base import Caption, RetrievalContext, Retriever, Selection, WindowOnly
from streamvqa.policies.retrieval.rlivs import caption_text
from streamvqa.store.base import BlockStore, MemoryStore, StreamIndex
from streamvqa.store.block import Block


@dataclass(eq=False)  # identity: a weak set tracks the live ones
class Assembled:
    """An answer cache: the sink and the retrieved blocks, before any question token."""

    key: tuple  # the per-layer selection it was built from
    cache: DynamicCache
    length: int
    end: int  # next position after the blocks, contiguous layout


class StreamSession:
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
        self.lock = lock  # the engine's model lock, held per forward call
        self.observers = observers
        self.max_question_chars = max_question_chars
        self.max_new_tokens = max_new_tokens
        self.tracker = adapter.new_positions()
        self.window = HotWindow(adapter, config.n_local)
        self._pending: list[tuple[np.ndarray, float]] = []
        self._push_lock = threading.Lock()  # frames of one stream are encoded in order
        self._stats = SessionStats(method=method)
        self._next_index = 0
        self._assembled: Assembled | None = None  # the last answer cache, reused by a follow-up
        # every answer cache alive: the kept one and those of answers in flight (counted as KV)
        self._answer_caches: weakref.WeakSet[Assembled] = weakref.WeakSet()
        self._answer_caches_lock = threading.Lock()
        self.closed = False
        with self.lock, torch.inference_mode():
            self._encode_prefix()
        self.stages = stages.MemoryStages(self)  # units, reduction, retention, budgets (policies/stages.py)

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
            if self.stages.active:  # every preset that retains, reduces, segments or has byte budgets
                self.stages.push(image, float(t))
                return
            self._pending.append((image, float(t)))
            if len(self._pending) >= self.config.unit_frames:
                unit, self._pending = self._pending, []
                self._encode_unit(unit)

    def flush(self) -> None:
        """Encode the frames of a unit still open (end of stream; a question does this itself)."""
        with self._push_lock:
            if self.stages.active:
                self.stages.flush()
            elif self._pending:
                unit, self._pending = self._pending, []
                self._encode_unit(unit)

    def _encode_unit(self, unit: list[tuple[np.ndarray, float]]) -> None:
        start = time.perf_counter()
        frames = [f for f, _ in unit]
        t0, t1 = unit[0][1], unit[-1][1]
        with self.lock, torch.inference_mode():
            piece = self.adapter.unit_piece(frames, t0)
            if piece_len(piece):  # zero tokens (nothing to see, the model's call): no block, no positions
                self._write_block(piece, frames, t0, t1)
                self._stats.units_encoded += 1
        seconds = time.perf_counter() - start
        self._stats.frames_encoded += len(unit)
        self._stats.encode_seconds_total += seconds
        for obs in self.observers:
            obs.on_unit_encoded(self.stream_id, seconds, len(unit))

    def _write_block(self, piece: Piece, frames: list[np.ndarray], t0: float, t1: float) -> None:
        p0 = self.tracker.next
        positions = self.tracker.place(piece)
        p1 = self.tracker.next
        window_positions = positions - p0 + self.window.next
        with capture(self.adapter.attention_layers()) as cap:
            self.adapter.forward(self.adapter.embed(piece), window_positions, self.window.cache, logits="none")
        d = self.adapter.head_dim
        keys = to_host(torch.stack([Capture.heads(k, d) for k in cap.k]))
        values = to_host(torch.stack([Capture.heads(v, d) for v in cap.v]))
        block = Block(
            stream_id=self.stream_id,
            index=self._next_index,
            t_start=t0,
            t_end=t1,
            keys=keys,
            values=values,
            positions=positions.cpu(),
            pos_start=p0,
            pos_end=p1,
            rep_keys=keys.float().mean(dim=2).to(keys.dtype),
        )
        if self.stores_blocks:
            self.store.put(block)
        self.retriever.observe(block, frames)  # stage 6: policies with their own index
        self._next_index += 1
        self.window.push(block)

    def stats(self) -> SessionStats:
        s = self._stats
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
        if self.stages.memory is not None:
            s.kv_bytes["memory"] = self.stages.memory_bytes()
            s.kv_blocks["memory"] = len(self.stages.memory.units)
            s.memory_tokens = self.stages.memory.tokens
        return s

    def _window_block_bytes(self) -> int:
        """Host bytes of the pre-RoPE blocks the hot window keeps to re-rotate itself when units
        leave (bounded by `n_local`). With an engine-owned `MemoryStore` they are the very objects
        the store counts; any other store holds its own copy, so they are memory of their own."""
        if self.stores_blocks and isinstance(self.store, MemoryStore):
            return 0
        return sum(b.nbytes for b in self.window.blocks)

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

    def _retrieve(self, question: str, at: float | None, candidates: tuple | None = None,
                  ) -> tuple[Selection, dict[int, tuple[float, float]]] | Selection:
        """Stage 7: run the question over the hot window to get its mean pre-RoPE query per
        layer, then let the policy choose blocks per layer. `candidates` (ids, rep_keys, times)
        replaces the store's index (retained-memory units; their Selection alone is returned)."""
        if candidates is not None:
            ids, rep, times = candidates
        else:
            index = self.block_index()
            ids, rep, times = index.indices, index.rep_keys, index.times
        if at is not None and candidates is None:
            keep = [i for i, (_, t1) in enumerate(times) if t1 <= at]
            if not keep:
                raise EngineError("empty_stream", f"nothing was encoded before t={at}")
            ids, rep, times = [ids[i] for i in keep], rep[keep], [times[i] for i in keep]
        window_ids = [i for i in self.window.block_ids if i in set(ids)]
        n_layers, d = self.adapter.n_layers, self.adapter.head_dim
        query = torch.zeros(n_layers, self.adapter.n_heads * d)
        if self.retriever.needs_query(len(ids)):
            piece = [self.adapter.text_segment(question)]
            positions = torch.arange(piece[0].n).view(1, -1).expand(self.tracker.rows, -1) + self.window.next
            cache = self.window.cache
            with capture(self.adapter.attention_layers(), q=True, kv=False) as cap:
                self.adapter.forward(self.adapter.embed(piece), positions, cache, logits="none")
            cache.crop(-piece[0].n)  # the question leaves no trace in the stream's window
            query = torch.stack([q[0].float().mean(0) for q in cap.q]).cpu()
        ctx = RetrievalContext(query=query, rep_keys=rep, block_ids=ids, window_ids=window_ids, question=question,
                               times=times, captions=list(self.captions), embed_text=self._embed_text)
        if candidates is not None:
            return self.retriever.select(ctx)
        return self.retriever.select(ctx), dict(zip(ids, times, strict=True))

    def _answer_iter(
        self, question: str, max_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
        at: float | None = None, seed: int | None = None,
    ) -> Iterator[TokenEvent | Answer]:
        if self.stages.active:  # a question closes the open unit: it must see every frame
            with self._push_lock:
                self.stages.flush()
        self._check(question, max_tokens, temperature, top_p)
        timings: dict[str, float] = {}
        start = time.perf_counter()
        adapter = self.adapter
        with self.lock, torch.inference_mode():
            timings["queue_s"] = time.perf_counter() - start
            t = time.perf_counter()
            memory = self.stages.memory
            if memory is not None:  # stages 7-8 over the retained memory (and demoted units)
                chosen, times, tiers = self.stages.select(question, at)
            else:
                chosen, times = self._retrieve(question, at)
            selection = chosen.per_layer
            wanted = sorted({i for layer in selection for i in layer})
            if memory is None:
                tiers = self._tiers_of(wanted)  # where the blocks were before retrieval promoted them
            key = (tuple(tuple(layer) for layer in selection), tuple(chosen.captions))
            if memory is not None:
                key = (key, memory.version, at)
            assembled, self._assembled = self._assembled, None  # owned by this answer until it ends
            reused = assembled is not None and assembled.key == key
            if not reused and memory is not None:
                cache, end = self.stages.assemble(chosen, at)
                assembled = Assembled(key, cache, cache.get_seq_length(), end)
            elif not reused:
                assembled = self._assemble(key, selection, wanted, chosen.captions)
            with self._answer_caches_lock:
                self._answer_caches.add(assembled)
            timings["retrieval_s"] = time.perf_counter() - t
            t = time.perf_counter()
            cache = assembled.cache
            end = max(assembled.end, self.tracker.next) if self.config.positions == "original" else assembled.end
            tracker = self.tracker.fork(end)
            piece = adapter.question_piece(question)
            logits = prefill(adapter, adapter.embed(piece), tracker.place(piece), cache)[0, -1]
            timings["prefill_s"] = time.perf_counter() - t
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        stream = TextStream(adapter.tokenizer)
        ids: list[int] = []
        finish = "length"
        last = time.perf_counter()
        for k in range(max_tokens):
            tok = next_token(logits, temperature, top_p, gen)
            if tok in adapter.eos_ids:
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
            if k + 1 == max_tokens:
                break
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

    def _assemble(self, key: tuple, selection: list[list[int]], wanted: list[int],
                  captions: list[Caption] | None = None) -> Assembled:
        """Stage 8: fetch the chosen blocks (any tier) and build the answer cache; retrieved
        captions (text memory) are prefilled after them, in time order."""
        blocks = {b.index: b for b in self.get_blocks(wanted)}
        # layers may hold different numbers of tokens (StreamKV's per-layer sizes): `prefill`
        # runs such ragged caches one token at a time, so each layer keeps its own selection
        per_layer = [[blocks[i] for i in layer] for layer in selection]
        layout = layout_for(self.config.positions, self.config.time_gap_scale, self.config.time_max_gap)
        laid = [layout(bl, self.window.sink.end, self.tracker.next) for bl in per_layer]
        keys, values = place(self.adapter, self.window.sink, per_layer, [p for p, _ in laid])
        cache = new_cache(self.adapter, keys, values)
        end = max(e for _, e in laid)
        if captions:
            piece = [self.adapter.text_segment(caption_text(captions))]
            tracker = self.tracker.fork(end)
            prefill(self.adapter, self.adapter.embed(piece), tracker.place(piece), cache, logits="none")
            end = tracker.next
        return Assembled(key, cache, cache.get_seq_length(), end)

    def _embed_text(self, texts: list[str]) -> tuple[torch.Tensor, list[int]]:
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

    def _tiers_of(self, indices: list[int]) -> dict[str, int]:
        if not self.stores_blocks:
            return {"window": len(indices)} if indices else {}
        tier_of = getattr(self.store, "tier_of", None)
        if tier_of is None:
            return {getattr(self.store, "tier", "host"): len(indices)}
        out: dict[str, int] = {}
        for i in indices:
            name = str(tier_of(self.stream_id, i))
            out[name] = out.get(name, 0) + 1
        return out

    # -- the Session protocol (engine/protocols.py) -------------------------------------------
    def events(self, question: str, *, max_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
               at: float | None = None, seed: int | None = None) -> Generator[TokenEvent | Answer, None, None]:
        """Tokens, then the Answer (blocking); closing it early abandons the question."""
        return self._answer_iter(question, max_tokens=max_tokens, temperature=temperature, top_p=top_p, at=at,
                                 seed=seed)

    def answer(self, question: str, *, max_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
               at: float | None = None, seed: int | None = None) -> Answer:
        """Answer synchronously (blocking)."""
        return final_answer(self.events(question, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                        at=at, seed=seed))

    def ask(self, question: str, *, max_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
            at: float | None = None, seed: int | None = None) -> AsyncIterator[TokenEvent | Answer]:
        """Stream tokens, then the Answer. Model work runs in a thread: the loop never blocks."""
        return stream_in_thread(self.events(question, max_tokens=max_tokens, temperature=temperature,
                                            top_p=top_p, at=at, seed=seed))

    @property
    def next_index(self) -> int:
        """Blocks written so far (the next block's index)."""
        return self._next_index

    def replicable(self) -> bool:
        """Whether the store holds all of this session's state, so a replica rebuilt from stored
        blocks (engine/replica.py) answers exactly as this session would. Not so with a retained
        memory, semantic units, reduction or byte budgets (the stages), nor with a retriever
        that keeps its own index of the frames (`observe`, rekv-external)."""
        stateful_retriever = type(self.retriever).observe is not Retriever.observe
        return not (stateful_retriever or self.stages.active)

    def counters(self) -> SessionStats:
        """A copy of the frame and unit counters, without `stats()`'s byte accounting (which asks
        the store)."""
        return replace(self._stats)

    def close(self) -> None:
        self.closed = True
        self.store.drop_stream(self.stream_id)


def merge_ranges(ranges: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Time ranges sorted and merged where they touch (consecutive units)."""
    out: list[tuple[float, float]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1e-9:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
