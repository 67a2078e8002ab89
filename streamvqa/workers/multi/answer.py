"""The `answer` worker: stages 7-9 over stored blocks (one worker per answer device).

Per stream it keeps a replica session (`engine/replica.py`): the sink computed once, the window
and counters refreshed from the store before every question. Blocks are leased and mapped from
the store's shared memory. Tokens stream back as `event` replies, the answer as the final one.

Degraded store (a cold tier down): the index leaves out blocks held only there; the answer is
built from what is readable and says so (``degraded`` and ``tiers["unavailable"]``). A block
the index listed but the store can no longer read (its only copy was lost, e.g. Redis flushed)
is forgotten by the store and reported as unavailable from then on; a question that hit it
is answered again from the blocks that are left and says so (``degraded: ["lost_blocks"]``,
``tiers["unavailable"]``, ``evidence_scores`` entries with ``missing: true`` where the block's
time is known), never a 500.

With the vLLM answer engine (docs/vllm.md) the worker supervises one vLLM process: the model lock
is held for the replica's refresh, retrieval and the memory's export only, the tokens come from
vLLM outside it, so the questions in flight (one RPC thread each, `MultiConfig.answer_threads`)
are decoded together. `ans.metrics` hands the server vLLM's and the connector's metrics.
"""

from __future__ import annotations

import logging
import os
import threading

import torch

from streamvqa.engine.errors import EngineError
from streamvqa.engine.replica import sync
from streamvqa.engine.session import StreamSession
from streamvqa.proto import ipc
from streamvqa.store.errors import BlockNotFoundError, StoreError
from streamvqa.workers.multi.asking import Cancels, answer_ask
from streamvqa.workers.multi.config import MultiConfig
from streamvqa.workers.multi.encoder import build_engine
from streamvqa.workers.multi.rpc import RpcServer

log = logging.getLogger(__name__)

_TRIES = 3  # answers of one question while blocks it was about to read vanish


class AnswerService:
    def __init__(self, config: MultiConfig, role: str = "answer") -> None:
        self.config = config
        self.role = role
        self.engine, self.store = build_engine(config, config.device_of(role), role)
        self._open_lock = threading.Lock()
        self.cancels = Cancels()  # ask ids whose caller went away

    def handlers(self) -> dict:
        return {"ping": self.ping, "ans.ask": self.ask, "ans.forget": self.forget, "ans.cancel": self.cancel,
                "ans.metrics": self.metrics}

    def metrics(self, body, atts, emit) -> ipc.MetricsText:
        """The answer engine's Prometheus text (empty with the transformers engine)."""
        if self.engine.answerer is None:
            return ipc.MetricsText(text="")
        from streamvqa.answering.metrics import exposition

        return ipc.MetricsText(text=exposition(self.engine.answerer))

    def cancel(self, body: ipc.CancelAsk, atts, emit) -> ipc.Empty:
        self.cancels.add(body.ask_id)
        return ipc.Empty()

    def ping(self, body, atts, emit) -> ipc.Pong:
        return ipc.Pong(role=self.role, pid=os.getpid(), info={"replicas": len(self.engine.sessions),
                                                                  "cancelled": self.cancels.total})

    def replica(self, stream_id: str, method: str, options: dict) -> StreamSession:
        with self._open_lock:
            session = self.engine.sessions.get(stream_id)
            if session is not None and (session.method != method):
                self.engine.sessions.pop(stream_id)
                session = None
            if session is None:
                session = self.engine.open_stream(stream_id, method, options)
            return session

    def ask(self, body: ipc.Ask, atts, emit) -> ipc.AnswerMsg:
        session = self.replica(body.stream_id, body.method, body.options)
        if not session.replicable:  # the server routes these to the encoder (enc.ask)
            raise EngineError("invalid_options", f"method {body.method!r} keeps state in the encoder; "
                              "its questions are answered there")
        for attempt in range(_TRIES):
            try:
                with self.engine.lock, torch.inference_mode():
                    sync(session)
                skipped = self.store.unavailable(body.stream_id)
                if session.next_index == 0 and skipped:
                    raise EngineError("store_unavailable", "no block of this stream is readable now "
                                      "(a store tier is down or lost them)")
                reply = answer_ask(session, body, emit, self.cancels, skipped, list(self.store.degraded))
                break
            except BlockNotFoundError:  # listed, then lost: the store has forgotten it; ask again
                if attempt + 1 == _TRIES:
                    raise EngineError("store_unavailable", "blocks of this stream kept vanishing") from None
            except StoreError as e:  # a tier failed before the health probe saw it: retry later
                log.warning("stream %s: store read failed: %s", body.stream_id, e)
                raise EngineError("store_unavailable", "the block store could not read this stream's "
                                  "blocks now; retry shortly") from None
        gone = self.store.times_of(body.stream_id, skipped)
        reply.evidence_scores = reply.evidence_scores + [  # what the answer could not look at
            {"t_start": t[0], "t_end": t[1], "missing": True} for _, t in sorted(gone.items())]
        return reply

    def forget(self, body: ipc.StreamRef, atts, emit) -> ipc.Empty:
        with self._open_lock:
            self.engine.sessions.pop(body.stream_id, None)
        return ipc.Empty()


def serve(config: MultiConfig, role: str = "answer") -> None:
    from streamvqa.workers.multi.process import run_until_signal

    service = AnswerService(config, role)
    server = RpcServer(config.endpoint(role), service.handlers(), threads=config.answer_threads())
    run_until_signal(server, on_close=service.engine.close)  # stops the vLLM process, if any
