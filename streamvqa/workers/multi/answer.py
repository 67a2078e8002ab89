"""The `answer` worker: stages 7-9 over stored blocks (one worker per answer device).

Per stream it keeps a replica session (`engine/replica.py`): the sink computed once, the window
and counters refreshed from the store before every question. Blocks are leased and mapped from
the store's shared memory. Tokens stream back as `event` replies, the answer as the final one.

Degraded store (a cold tier down): the index leaves out blocks held only there; the answer is
built from what is readable and says so (``degraded`` and ``tiers["unavailable"]``).
"""

from __future__ import annotations

import logging
import os
import threading

import torch

from streamvqa.engine.errors import EngineError
from streamvqa.engine.replica import sync
from streamvqa.engine.session import StreamSession
from streamvqa.engine.types import Answer, TokenEvent
from streamvqa.proto import ipc
from streamvqa.workers.multi.config import MultiConfig
from streamvqa.workers.multi.encoder import build_engine
from streamvqa.workers.multi.rpc import RpcServer

log = logging.getLogger(__name__)


class AnswerService:
    def __init__(self, config: MultiConfig, role: str = "answer") -> None:
        self.config = config
        self.role = role
        self.engine, self.store = build_engine(config, config.device_of(role), role)
        self._open_lock = threading.Lock()
        self._cancelled: set[str] = set()  # ask ids whose caller went away
        self.cancelled_total = 0

    def handlers(self) -> dict:
        return {"ping": self.ping, "ans.ask": self.ask, "ans.forget": self.forget, "ans.cancel": self.cancel}

    def cancel(self, body: ipc.CancelAsk, atts, emit) -> ipc.Empty:
        with self._open_lock:
            self._cancelled.add(body.ask_id)
        return ipc.Empty()

    def ping(self, body, atts, emit) -> ipc.Pong:
        return ipc.Pong(role=self.role, pid=os.getpid(), info={"replicas": len(self.engine.sessions),
                                                                  "cancelled": self.cancelled_total})

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
        with self.engine.lock, torch.inference_mode():
            sync(session)
        if session._next_index == 0 and self.store.unavailable(body.stream_id):
            raise EngineError("store_unavailable", "every block of this stream is in a tier that is down")
        skipped = self.store.unavailable(body.stream_id)
        down = list(self.store.degraded)
        answer: Answer | None = None
        it = session._answer_iter(body.question, max_tokens=body.max_tokens, temperature=body.temperature,
                                  top_p=body.top_p, at=body.at, seed=body.seed)
        try:
            for ev in it:
                if isinstance(ev, TokenEvent):
                    if body.ask_id is not None and body.ask_id in self._cancelled:
                        self.cancelled_total += 1
                        raise ipc.IpcError("cancelled", "the caller went away")
                    emit(ipc.TokenMsg(text=ev.text, token_id=ev.token_id, index=ev.index))
                else:
                    answer = ev
        finally:
            it.close()  # a cancelled answer leaves no answer cache behind (the next one rebuilds it)
            if body.ask_id is not None:
                with self._open_lock:
                    self._cancelled.discard(body.ask_id)
        assert answer is not None
        tiers = dict(answer.tiers)
        if skipped:
            tiers["unavailable"] = len(skipped)
        return ipc.AnswerMsg(
            text=answer.text, token_ids=answer.token_ids, evidence=answer.evidence, timings=answer.timings,
            finish_reason=answer.finish_reason, tiers=tiers, evidence_scores=answer.evidence_scores,
            retrieved_blocks=answer.retrieved_blocks, reused_cache=answer.reused_cache, degraded=down,
        )

    def forget(self, body: ipc.StreamRef, atts, emit) -> ipc.Empty:
        with self._open_lock:
            self.engine.sessions.pop(body.stream_id, None)
        return ipc.Empty()


def serve(config: MultiConfig, role: str = "answer") -> None:
    from streamvqa.workers.multi.process import run_until_signal

    service = AnswerService(config, role)
    server = RpcServer(config.endpoint(role), service.handlers(), threads=8)
    run_until_signal(server)
