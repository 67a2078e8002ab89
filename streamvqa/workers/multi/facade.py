"""`MultiEngine`: what the server sees in the multi-process topology — the `Engine` API shape
(open_stream / get / close_stream / methods / model_info / observers / health / close) over the
worker processes, so the registry, REST, WebSocket and metrics code is the same in both modes.

`RemoteSession` is a stream's handle: frames go to the encoder (one RPC per frame, replied once
taken, so ingest sees the same backpressure as in embedded mode), questions to the answer
worker (tokens streamed back) — or to the stream's encoder when its method keeps state the
store does not hold (`enc.ask`), statistics are what the encoder reported plus the store's usage.
With the vLLM answer engine, questions wait on their tokens in an executor as large as what the
answer workers' vLLM engines decode at once, and /metrics gathers their vLLM metrics.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Generator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from streamvqa.engine.errors import EngineError
from streamvqa.engine.protocols import EngineObserver, final_answer, stream_in_thread
from streamvqa.engine.types import Answer, SessionStats, TokenEvent
from streamvqa.proto import ApiError, ipc
from streamvqa.workers.ingest import IngestConfig
from streamvqa.workers.multi import wire
from streamvqa.workers.multi.config import MultiConfig
from streamvqa.workers.multi.remote_ingest import RemoteIngest
from streamvqa.workers.multi.remote_store import RemoteStore
from streamvqa.workers.multi.rpc import RpcClient
from streamvqa.workers.multi.supervisor import Supervisor

log = logging.getLogger(__name__)

UNAVAILABLE = ("worker_unavailable", "timeout")


def _unavailable(role: str, e: ipc.IpcError) -> ApiError:
    return ApiError("worker_unavailable", f"the {role} worker is unavailable ({e.message}); retry shortly", 503)


class RemoteSession:
    # threads that wait on a question's tokens (the engine's, sized to vLLM's batch); None: the
    # event loop's default executor, as StreamSession without an answer engine
    executor: ThreadPoolExecutor | None = None

    def __init__(self, engine: MultiEngine, stream_id: str, method: str, options: dict, encoder: str) -> None:
        self.engine = engine
        self.executor = getattr(engine, "executor", None)
        self.encoder = encoder  # the encoder worker this stream is placed on
        self.stream_id = stream_id
        self.method = method
        self.options = dict(options)
        self.closed = False
        self._lock = threading.Lock()
        self._stats = SessionStats(method=method)
        self._enc: ipc.EncoderStats | None = None
        self._usage: tuple[float, ipc.Usage] | None = None
        self.acked = 0  # blocks the store acknowledged (indices below are readable)
        self.resumes = 0
        self.answers_on_encoder = False  # its state lives in the encoder (retained memory etc.)
        self.ingest: RemoteIngest | None = None  # a URL source ingested by the encoder

    # -- frames -----------------------------------------------------------------------------
    def open(self, resume: bool = False) -> None:
        try:
            reply, _ = self.engine.supervisor.workers[self.encoder].client.call(
                "enc.open", ipc.OpenStream(stream_id=self.stream_id, method=self.method, options=self.options,
                                           resume=resume), timeout=self.engine.config.start_timeout_s)
        except ipc.IpcError as e:
            if e.code in UNAVAILABLE:
                raise EngineError("worker_unavailable", f"encoder: {e.message}") from None
            raise EngineError(e.code, e.message) from None
        if resume:
            self.resumes += 1
        self.answers_on_encoder = reply.answers_here
        self.acked = max(self.acked, reply.next_index)

    def push_frame(self, image: np.ndarray, t: float) -> None:
        if self.closed:
            raise EngineError("stream_closed", f"stream {self.stream_id} is closed")
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise EngineError("invalid_frame", f"frames must be HxWx3 uint8, got {image.shape} {image.dtype}")
        with self._lock:
            self._stats.frames_received += 1
            self._stats.last_frame_t = float(t)
        ref, raw = ipc.tensor_ref(image, 0)
        body = ipc.PushFrame(stream_id=self.stream_id, t=float(t), image=ref)
        client = self.encoder_client()
        for attempt in range(2):
            try:
                reply, _ = client.call("enc.frame", body, [raw], timeout=self.engine.config.frame_timeout_s)
                break
            except ipc.IpcError as e:
                if e.code == "unknown_stream" and attempt == 0 and not self.closed:
                    self.open(resume=True)  # a restarted encoder: continue after the last stored block
                    continue
                if e.code in UNAVAILABLE:
                    raise EngineError("worker_unavailable", f"encoder: {e.message}") from None
                raise EngineError(e.code, e.message) from None
        self._took(reply)

    def _took(self, reply: ipc.EncoderStats) -> None:
        with self._lock:
            self._enc = reply
            s = self._stats
            if reply.last_unit_frames:  # this frame completed a unit (counted here: a restarted
                s.units_encoded += 1    # encoder starts its own counters from zero)
                self._usage = None  # the store holds one more block
                s.frames_encoded += reply.last_unit_frames
                s.encode_seconds_total += reply.last_unit_seconds
            s.window_tokens = reply.window_tokens
            self.acked = max(self.acked, reply.next_index)
        if reply.last_unit_frames:
            for obs in self.engine.observers:
                obs.on_unit_encoded(self.stream_id, reply.last_unit_seconds, reply.last_unit_frames)

    # -- what RemoteIngest needs (remote_ingest.IngestHost) -----------------------------------
    def encoder_client(self) -> RpcClient:
        return self.engine.supervisor.workers[self.encoder].client

    def encoder_up(self) -> bool:
        return self.engine.worker_up(self.encoder)

    def remote_ingest(self, config: IngestConfig, name: str | None = None) -> RemoteIngest:
        """The registry's seam: a URL source is ingested by this stream's encoder (frames never
        cross a socket); the returned handle has `IngestWorker`'s shape (not started yet)."""
        self.ingest = RemoteIngest(self, config, interval_s=self.engine.config.ingest_poll_s)
        return self.ingest

    def took_remote(self, poll: ipc.IngestPoll) -> None:
        """Frames and units the encoder's own ingest fed this stream since the last poll."""
        with self._lock:
            s = self._stats
            s.frames_received += poll.frames
            if poll.last_t is not None:
                s.last_frame_t = float(poll.last_t)
            for seconds, frames in poll.units:
                s.units_encoded += 1
                s.frames_encoded += frames
                s.encode_seconds_total += seconds
            if poll.units:
                self._usage = None
            if poll.encoder is not None:
                self._enc = poll.encoder
                s.window_tokens = poll.encoder.window_tokens
                self.acked = max(self.acked, poll.encoder.next_index)
        for seconds, frames in poll.units:
            for obs in self.engine.observers:
                obs.on_unit_encoded(self.stream_id, seconds, frames)

    def stats(self) -> SessionStats:
        usage = self._store_usage()
        with self._lock:
            s = SessionStats(**{k: getattr(self._stats, k) for k in self._stats.__dataclass_fields__})
            enc = self._enc
        s.kv_bytes = {"device": enc.window_bytes if enc else 0, **(usage.bytes if usage else {})}
        s.kv_blocks = {"window": enc.window_blocks if enc else 0, **(usage.blocks if usage else {})}
        return s

    def _store_usage(self) -> ipc.Usage | None:
        now = time.monotonic()
        cached = self._usage
        if cached is not None and now - cached[0] < 1.0:
            return cached[1]
        try:
            usage = self.engine.store.usage(self.stream_id)
        except Exception:  # the store restarting must not break (or stall) GET /v1/streams
            if cached is not None:
                self._usage = (now, cached[1])  # do not ask again for a second
            return cached[1] if cached else None
        self._usage = (now, usage)
        return usage

    # -- questions (the Session protocol, engine/protocols.py) -----------------------------------
    def events(self, question: str, *, max_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
               at: float | None = None, seed: int | None = None) -> Generator[TokenEvent | Answer, None, None]:
        if self.closed:
            raise EngineError("stream_closed", f"stream {self.stream_id} is closed")
        ask_id = uuid.uuid4().hex
        body = ipc.Ask(stream_id=self.stream_id, method=self.method, options=self.options, question=question,
                       ask_id=ask_id, max_tokens=max_tokens, temperature=temperature, top_p=top_p, at=at, seed=seed)
        # the encoder answers streams whose state only it holds; answer workers the others
        role, ns = (self.encoder, "enc") if self.answers_on_encoder else (self.engine.answer_role(self.stream_id), "ans")
        client = self.engine.supervisor.workers[role].client
        last: float | None = None  # ITL counts gaps between tokens only (vLLM), not the first token
        finished = False
        try:
            for _kind, msg in client.stream(f"{ns}.ask", body, idle_timeout=self.engine.config.answer_idle_timeout_s):
                ev = wire.from_wire(msg)
                if isinstance(ev, TokenEvent):
                    now = time.perf_counter()
                    if last is not None:
                        for obs in self.engine.observers:
                            obs.on_token(self.stream_id, now - last)
                    last = now
                else:
                    finished = True
                    for obs in self.engine.observers:
                        obs.on_answer(self.stream_id, ev)
                yield ev
        except ipc.IpcError as e:
            finished = True
            if e.code in UNAVAILABLE or (ns == "enc" and e.code == "unknown_stream" and not self.closed):
                # (an encoder that restarted and has not resumed the stream yet: retry shortly)
                raise _unavailable("encoder" if ns == "enc" else "answer", e) from None
            raise EngineError(e.code, e.message) from None
        finally:
            if not finished:  # abandoned (client gone): stop the worker generating for nobody
                try:
                    client.call(f"{ns}.cancel", ipc.CancelAsk(ask_id=ask_id), timeout=2.0, connect_wait=0.2)
                except ipc.IpcError:
                    pass

    def answer(self, question: str, *, max_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
               at: float | None = None, seed: int | None = None) -> Answer:
        return final_answer(self.events(question, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                        at=at, seed=seed))

    def ask(self, question: str, *, max_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
            at: float | None = None, seed: int | None = None) -> AsyncIterator[TokenEvent | Answer]:
        return stream_in_thread(self.events(question, max_tokens=max_tokens, temperature=temperature,
                                            top_p=top_p, at=at, seed=seed), self.executor)

    def close(self) -> None:
        self.closed = True
        if self.ingest is not None:
            self.ingest.detach()  # enc.close stops it in the encoder; stop polling here


class MultiEngine:
    """The server's engine in the multi-process topology (owns the supervisor it is given)."""

    def __init__(self, config: MultiConfig, supervisor: Supervisor | None = None) -> None:
        self.config = config
        self.supervisor = supervisor or Supervisor(config)
        self.observers: list[EngineObserver] = []
        self.sessions: dict[str, RemoteSession] = {}
        self._lock = threading.Lock()
        if not self.supervisor.started:
            self.supervisor.start()
        roles = list(self.supervisor.workers)
        self.encoders = [r for r in roles if r.startswith("encoder")]
        self.answers = [r for r in roles if r.startswith("answer")]
        info, _ = self.supervisor.workers[self.encoders[0]].client.call("enc.info", ipc.Empty(), timeout=30)
        self._methods = list(info.methods)
        self._model = dict(info.model)
        kv = self.supervisor.workers["kvstore"].client
        self.store = RemoteStore(kv, str(self._model["fingerprint"]), config.shm_prefix)
        self.supervisor.on_ready.append(self._worker_ready)
        self.supervisor.on_death.append(self._worker_died)
        # threads that wait on the answer workers' tokens: with vLLM, every question it may decode
        # at once (the event loop's default executor has a handful; it would cap the batch)
        self.executor: ThreadPoolExecutor | None = None
        if config.answer_engine == "vllm":
            self.executor = ThreadPoolExecutor(config.answer_threads() * len(self.answers),
                                               thread_name_prefix="svqa-ask")

    def worker_up(self, role: str) -> bool:
        return self.supervisor.workers[role].state == "up"

    def place(self) -> str:
        """The encoder for a new stream: the one (up) with the fewest streams."""
        with self._lock:
            load = {r: 0 for r in self.encoders}
            for s in self.sessions.values():
                load[s.encoder] = load.get(s.encoder, 0) + 1
        up = [r for r in self.encoders if self.worker_up(r)] or self.encoders
        return min(up, key=lambda r: (load[r], self.encoders.index(r)))

    def answer_role(self, stream_id: str) -> str:
        """A stream's answer worker: always the same one while it is up (its replica is warm),
        another one that is up otherwise."""
        home = self.answers[zlib.crc32(stream_id.encode()) % len(self.answers)]
        if self.worker_up(home):
            return home
        return next((r for r in self.answers if self.worker_up(r)), home)

    def _worker_ready(self, role: str) -> None:
        if not role.startswith("encoder"):
            return

        def resume() -> None:
            for session in list(self.sessions.values()):
                if session.closed or session.encoder != role:
                    continue
                try:
                    session.open(resume=True)
                except EngineError as e:
                    log.warning("stream %s: resume failed: %s", session.stream_id, e.message)
                    continue
                if session.ingest is not None:  # its ingest died with the encoder: start it again
                    session.ingest.restart()

        threading.Thread(target=resume, name="resume-streams", daemon=True).start()

    def _worker_died(self, role: str) -> None:
        log.warning("%s worker died: %s", role, self.supervisor.status()[role])

    # -- Engine API -------------------------------------------------------------------------
    def methods(self) -> list[str]:
        return list(self._methods)

    def model_info(self) -> dict:
        return {**self._model, "topology": "multi"}

    def tokenizer(self) -> Any | None:
        return None  # the model lives in the worker processes

    def open_stream(self, stream_id: str, method: str = "rekv", options: dict | None = None) -> RemoteSession:
        with self._lock:
            if stream_id in self.sessions:
                raise EngineError("stream_exists", f"stream {stream_id!r} already exists")
        session = RemoteSession(self, stream_id, method, options or {}, self.place())
        session.open()
        with self._lock:
            self.sessions[stream_id] = session
        return session

    def get(self, stream_id: str) -> RemoteSession:
        with self._lock:
            if stream_id not in self.sessions:
                raise EngineError("unknown_stream", f"no stream {stream_id!r}")
            return self.sessions[stream_id]

    def close_stream(self, stream_id: str) -> None:
        session = self.get(stream_id)
        session.close()
        with self._lock:
            self.sessions.pop(stream_id, None)
        body = ipc.StreamRef(stream_id=stream_id)
        for role, op in [(session.encoder, "enc.close")] + [(r, "ans.forget") for r in self.answers]:
            try:
                self.supervisor.workers[role].client.call(op, body, timeout=10)
            except ipc.IpcError as e:  # a worker that is down has no state for it anyway
                log.debug("%s %s: %s", op, stream_id, e)
        try:
            self.store.drop_stream(stream_id)
        except Exception as e:
            log.warning("drop %s from the store: %s", stream_id, e)

    def collectors(self) -> list:
        """Prometheus collectors the server registers next to its own."""
        if self.config.answer_engine != "vllm":
            return [WorkerCollector(self)]
        from streamvqa.answering.metrics import WorkersCollector

        return [WorkerCollector(self), WorkersCollector(self.answer_metrics)]

    def answer_metrics(self) -> dict[str, str]:
        """Each answer worker's answer-engine metrics text (those down or slow are left out)."""
        out = {}
        for role in self.answers:
            if not self.worker_up(role):
                continue
            try:
                reply, _ = self.supervisor.workers[role].client.call("ans.metrics", ipc.Empty(), timeout=10,
                                                                     connect_wait=0.5)
            except ipc.IpcError as e:
                log.debug("%s metrics: %s", role, e)
                continue
            out[role] = reply.text
        return out

    def health(self) -> dict:
        """For `/ready`: the store's tiers (a cold tier down is `degraded`, still ready) and the
        workers (one restarting is degraded; the store down means not ready)."""
        workers = self.supervisor.status()
        try:
            h = self.store.health()
        except Exception as e:
            h = {"ok": False, "degraded": [], "error": f"kvstore: {e}", "tiers": {}}
        h["workers"] = workers
        h["degraded"] = list(h.get("degraded") or []) + [
            f"worker.{r}" for r, w in workers.items() if w["state"] != "up" and r != "kvstore"
        ]
        if workers["kvstore"]["state"] != "up":
            h["ok"] = False
        return h

    def close(self) -> None:
        for stream_id in list(self.sessions):
            self.sessions[stream_id].close()
        self.supervisor.stop()
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)


class WorkerCollector:
    """Prometheus collector for the multi topology: worker states and restarts, cold tier health
    and the write-behind queue (the store's health, as `/ready` shows it). Registered by the
    server when its engine offers `collectors()`; reads only what the supervisor already knows,
    plus one health call (cached by the kvstore) per scrape."""

    def __init__(self, engine: MultiEngine) -> None:
        self.engine = engine

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        status = self.engine.supervisor.status()
        up = GaugeMetricFamily("vqa_worker_up", "1 if the worker process serves", labels=["role"])
        restarts = CounterMetricFamily("vqa_worker_restarts", "worker restarts by the supervisor", labels=["role"])
        for role, w in status.items():
            up.add_metric([role], 1.0 if w["state"] == "up" else 0.0)
            restarts.add_metric([role], float(w["restarts"]))
        yield up
        yield restarts
        try:
            h = self.engine.store.health()
        except Exception:
            return
        tier_up = GaugeMetricFamily("vqa_kv_tier_up", "1 if the store tier is reachable", labels=["tier"])
        for name, t in (h.get("tiers") or {}).items():
            tier_up.add_metric([name], 1.0 if t.get("ok") else 0.0)
        yield tier_up
        pending = GaugeMetricFamily("vqa_kv_write_behind_items", "blocks queued for a colder tier")
        pending.add_metric([], float(h.get("pending_items") or 0))
        yield pending
