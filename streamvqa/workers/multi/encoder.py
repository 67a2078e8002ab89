"""The `encoder` worker: ingest + stages 1-6 for the streams placed on it (one worker per
encoding device).

URL sources (rtsp/http/file) are ingested here (`enc.ingest`, `enc_ingest.py`): the same
`IngestWorker` as embedded mode feeds the session directly, and the server polls its counters
(`enc.poll`). WHIP frames arrive one per `enc.frame` (WebRTC ends at the server); a frame's reply
returns once the frame is taken (and its unit encoded and acknowledged, when it completed one),
so the server's WHIP delivery sees backpressure exactly as in embedded mode.

It owns the model's hot windows; finished blocks go to the kvstore through `RemoteStore.put`
(shared-memory staging, acknowledged by the store).

After a restart the server re-opens its streams with ``resume=True``: the session is rebuilt
from the store (`engine/replica.sync`) and continues after the last acknowledged block, and URL
ingests start again from there (`IngestWorker(resume_after=...)`, `enc_ingest.py`). WHIP frames of a unit that was not
complete when the worker died are lost.

Streams whose method keeps state the store does not hold (a retained memory, semantic units,
a retriever's own index: `StreamSession.replicable`) are also answered here (`enc.ask`): the encoder holds
the exact session, so the answer is the embedded one. Their questions share the model lock with
encoding, as in embedded mode.
"""

from __future__ import annotations

import logging
import os
import threading

import torch

from streamvqa.engine.config import EngineConfig
from streamvqa.engine.engine import Engine
from streamvqa.engine.errors import EngineError
from streamvqa.engine.replica import sync
from streamvqa.engine.session import StreamSession
from streamvqa.proto import ipc
from streamvqa.workers.multi.asking import Cancels, answer_ask
from streamvqa.workers.multi.config import MultiConfig
from streamvqa.workers.multi.enc_ingest import StreamIngest, parse_config
from streamvqa.workers.multi.remote_store import RemoteStore
from streamvqa.workers.multi.rpc import RpcClient, RpcServer

log = logging.getLogger(__name__)


class _UnitTimer:
    """Engine observer: the last unit's encode time, read back into the frame's reply."""

    def __init__(self) -> None:
        self.local = threading.local()

    def on_unit_encoded(self, stream_id: str, seconds: float, frames: int) -> None:
        self.local.last = (seconds, frames)

    def on_token(self, *a) -> None:
        pass

    def on_answer(self, *a) -> None:
        pass

    def take(self) -> tuple[float, int]:
        out = getattr(self.local, "last", (0.0, 0))
        self.local.last = (0.0, 0)
        return out


def build_engine(config: MultiConfig, device: str, role: str) -> tuple[Engine, RemoteStore]:
    """A model worker's engine over the kvstore (opens the store with this model's fingerprint).
    Answer workers decode with the configured answer engine (vLLM: one process per worker);
    encoders always with their own model (the questions they answer keep state only they hold)."""
    from streamvqa.models.loading import load_adapter

    answers = role.startswith("answer")
    ecfg = EngineConfig(model=config.model, device=device, dtype=config.dtype, threads=config.threads,
                        max_question_chars=config.max_question_chars, max_new_tokens=config.max_new_tokens,
                        answer_engine=config.answer_engine if answers else "transformers",
                        vllm=config.vllm if answers else {})
    if ecfg.threads:
        torch.set_num_threads(ecfg.threads)
    adapter = load_adapter(ecfg.model, ecfg.device, ecfg.torch_dtype)
    client = RpcClient(config.endpoint("kvstore"), name="kvstore")
    store = RemoteStore(client, adapter.fingerprint(), config.shm_prefix, device=device,
                        lease_ttl_s=config.lease_ttl_s, put_timeout_s=config.put_timeout_s)
    store.connect(retry_for=config.start_timeout_s)
    return Engine(ecfg, adapter=adapter, store=store), store


class EncoderService:
    def __init__(self, config: MultiConfig, role: str = "encoder") -> None:
        self.config = config
        self.role = role
        self.engine, self.store = build_engine(config, config.device_of(role), role)
        self.timer = _UnitTimer()
        self.engine.observers.append(self.timer)
        self._open_lock = threading.Lock()
        self.cancels = Cancels()  # enc.ask ids whose caller went away
        self.ingests: dict[str, StreamIngest] = {}  # URL sources ingested here (enc.ingest)

    def handlers(self) -> dict:
        return {
            "ping": self.ping,
            "enc.info": self.info,
            "enc.open": self.open,
            "enc.frame": self.frame,
            "enc.close": self.close_stream,
            "enc.ask": self.ask,
            "enc.cancel": self.cancel,
            "enc.ingest": self.start_ingest,
            "enc.poll": self.poll,
            "enc.ingest_stop": self.stop_ingest,
        }

    def ping(self, body, atts, emit) -> ipc.Pong:
        return ipc.Pong(role=self.role, pid=os.getpid(), info={"streams": len(self.engine.sessions),
                                                                  "cancelled": self.cancels.total})

    def info(self, body, atts, emit) -> ipc.ModelInfo:
        return ipc.ModelInfo(methods=self.engine.methods(), model=self.engine.model_info())

    def open(self, body: ipc.OpenStream, atts, emit) -> ipc.StreamOpened:
        with self._open_lock:
            session = self.engine.sessions.get(body.stream_id)
            if session is None:
                session = self.engine.open_stream(body.stream_id, body.method, body.options)
                if body.resume:
                    # a retained memory / retriever index is not in the store: it restarts empty
                    # and fills again from the frames after the resume point (docs/processes.md)
                    with self.engine.lock, torch.inference_mode():
                        n = sync(session)
                    log.info("stream %s resumed after %d stored blocks", body.stream_id, n)
            return ipc.StreamOpened(stream_id=body.stream_id, next_index=session.next_index,
                                    answers_here=not session.replicable)

    def _session(self, stream_id: str) -> StreamSession:
        session = self.engine.sessions.get(stream_id)
        if session is None:
            raise EngineError("unknown_stream", f"stream {stream_id!r} is not open on this encoder")
        return session

    def _push(self, session, image, t: float) -> tuple[float, int]:
        """Push one frame; the encode time and frame count of the unit it completed (or 0, 0)."""
        self.timer.take()
        self.engine.scheduler.encode(session, image, t)  # batched with the other streams' frames
        return self.timer.take()

    @staticmethod
    def _stats(session: StreamSession, seconds: float = 0.0, frames: int = 0) -> ipc.EncoderStats:
        s = session.counters()
        w = session.window
        return ipc.EncoderStats(
            frames_received=s.frames_received, frames_encoded=s.frames_encoded, units_encoded=s.units_encoded,
            window_tokens=w.tokens, window_bytes=w.nbytes, window_blocks=len(w.blocks),
            encode_seconds_total=s.encode_seconds_total, last_unit_seconds=seconds, last_unit_frames=frames,
            next_index=session.next_index,
        )

    def frame(self, body: ipc.PushFrame, atts, emit) -> ipc.EncoderStats:
        session = self._session(body.stream_id)
        image = ipc.to_numpy(body.image, atts)
        if image.ndim != 3 or image.shape[2] != 3:
            raise EngineError("invalid_frame", f"frames must be HxWx3 uint8, got {list(image.shape)}")
        seconds, frames = self._push(session, image, body.t)
        return self._stats(session, seconds, frames)

    # -- URL ingest (enc_ingest.py) -----------------------------------------------------------
    def start_ingest(self, body: ipc.StartIngest, atts, emit) -> ipc.Empty:
        config = parse_config(body)
        session = self._session(body.stream_id)
        after = None
        if session.next_index:  # resumed: continue after the last acknowledged block
            idx = self.store.index(body.stream_id)
            after = float(idx.times[-1][1]) if idx.times else None
        ingest = StreamIngest(config, lambda f, t: self._push(session, f.image, t), after, name=body.stream_id)
        with self._open_lock:
            old = self.ingests.pop(body.stream_id, None)
            self.ingests[body.stream_id] = ingest
        if old is not None:
            old.worker.stop()
        ingest.worker.start()
        log.info("stream %s: ingest of %s started here (after t=%s)", body.stream_id, config.url, after)
        return ipc.Empty()

    def poll(self, body: ipc.StreamRef, atts, emit) -> ipc.IngestPoll:
        ingest = self.ingests.get(body.stream_id)
        session = self.engine.sessions.get(body.stream_id)
        if ingest is None:
            return ipc.IngestPoll(active=False)
        return ingest.drain(self._stats(session) if session is not None else None)

    def stop_ingest(self, body: ipc.StreamRef, atts, emit) -> ipc.IngestPoll:
        with self._open_lock:
            ingest = self.ingests.pop(body.stream_id, None)
        if ingest is None:
            return ipc.IngestPoll(active=False)
        ingest.worker.stop()
        session = self.engine.sessions.get(body.stream_id)
        return ingest.drain(self._stats(session) if session is not None else None)

    def ask(self, body: ipc.Ask, atts, emit) -> ipc.AnswerMsg:
        """A question for a stream whose state lives here: the session itself answers (stages
        7-9 after its frames, under the engine's model lock), exactly as in embedded mode."""
        session = self.engine.sessions.get(body.stream_id)
        if session is None:
            raise EngineError("unknown_stream", f"stream {body.stream_id!r} is not open on this encoder")
        return answer_ask(session, body, emit, self.cancels, self.store.unavailable(body.stream_id),
                          list(self.store.degraded))

    def cancel(self, body: ipc.CancelAsk, atts, emit) -> ipc.Empty:
        self.cancels.add(body.ask_id)
        return ipc.Empty()

    def close_stream(self, body: ipc.StreamRef, atts, emit) -> ipc.Empty:
        # the server drops the stream's blocks from the store itself (the encoder may be down)
        with self._open_lock:
            ingest = self.ingests.pop(body.stream_id, None)
        if ingest is not None:
            ingest.worker.stop()
        session = self.engine.sessions.pop(body.stream_id, None)
        if session is not None:
            session.closed = True
        return ipc.Empty()


def serve(config: MultiConfig, role: str = "encoder") -> None:
    from streamvqa.workers.multi.process import run_until_signal

    service = EncoderService(config, role)
    server = RpcServer(config.endpoint(role), service.handlers(), threads=8)
    run_until_signal(server)
