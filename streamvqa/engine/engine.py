"""The engine: one model, a block store, and the live stream sessions that share them."""

from __future__ import annotations

from typing import Any

import torch

from streamvqa.answering.engines import make_answer_engine
from streamvqa.engine import spill
from streamvqa.engine.config import EngineConfig
from streamvqa.engine.encode_scheduler import EncodeScheduler
from streamvqa.engine.errors import EngineError
from streamvqa.engine.model_lock import ModelLock
from streamvqa.engine.protocols import EngineObserver
from streamvqa.engine.session import StreamSession
from streamvqa.models.base import ModelAdapter
from streamvqa.models.loading import load_adapter
from streamvqa.policies.presets import PRESETS, MethodError, canonical, resolve
from streamvqa.store.base import BlockStore, MemoryStore


class Engine:
    def __init__(self, config: EngineConfig | None = None, adapter: ModelAdapter | None = None,
                 store: BlockStore | None = None) -> None:
        self.config = config or EngineConfig()
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        self.adapter = adapter or load_adapter(self.config.model, self.config.device, self.config.torch_dtype)
        # a store handed in is shared (multi topology: answer workers rebuild windows from it), so
        # sessions write every block there; a store of our own gets only blocks a preset reads back
        self.shared_store = store is not None
        self.store = store or self._make_store()
        self.lock = ModelLock()  # one turn at the model at a time, first come first served
        self.sessions: dict[str, StreamSession] = {}
        self.observers: list[EngineObserver] = []
        # stage 9 in a vLLM process, or None (the model above); streamvqa/answering
        self.answerer = make_answer_engine(self.config.answer_engine, self.adapter,
                                           {"threads": self.config.threads, **self.config.vllm})
        # live streams' frames go through it: batched across streams, shed fairly when behind
        self.scheduler = EncodeScheduler(self.lock, self.config.encode, self.observers)

    def _make_store(self) -> BlockStore:
        if self.config.store is None:
            return MemoryStore()
        from streamvqa.store import TieredStore, TieredStoreConfig

        # the model fingerprint is part of every key: two models never read each other's blocks
        cfg = TieredStoreConfig.model_validate({**self.config.store, "fingerprint": self.adapter.fingerprint()})
        if any(t.kind == "disk" and spill.is_spill(t.path) for t in cfg.tiers):
            spill.reap()  # scratch directories of servers that are gone
        return TieredStore(cfg)

    def close(self) -> None:
        for stream_id in list(self.sessions):
            self.close_stream(stream_id)
        if self.answerer is not None:
            self.answerer.close()
        self.store.close()
        for t in getattr(getattr(self.store, "config", None), "tiers", ()):
            if t.kind == "disk":
                spill.remove(t.path)  # only this process's scratch spill; a configured disk tier stays

    def model_info(self) -> dict:
        a = self.adapter
        return {
            "name": self.config.model,
            "family": a.family,
            "device": str(a.device),
            "dtype": str(a.dtype).removeprefix("torch."),
            "layers": a.n_layers,
            "fingerprint": a.fingerprint(),
        }

    def methods(self) -> list[str]:
        return list(PRESETS)

    # -- capabilities of the Engine protocol (engine/protocols.py) ------------------------------
    def health(self) -> dict[str, Any]:
        """The store's tiers for `/ready`. A host-RAM store (no `health`, it is not part of
        `BlockStore`) lives and dies with this process: nothing to report."""
        probe = getattr(self.store, "health", None)
        if probe is None:
            return {"ok": True, "degraded": [], "note": "in-process store"}
        return dict(probe())


    def tokenizer(self) -> Any | None:
        return self.adapter.tokenizer

    def open_stream(self, stream_id: str, method: str = "rekv", options: dict | None = None) -> StreamSession:
        if stream_id in self.sessions:
            raise EngineError("stream_exists", f"stream {stream_id!r} already exists")
        method = canonical(method)  # aliases (v-rex) are recorded as their preset
        try:
            config = resolve(method, options)
        except MethodError as e:
            raise EngineError(e.code, str(e)) from None
        session = StreamSession(
            stream_id, self.adapter, self.store, method, config, self.lock, self.observers,
            self.config.max_question_chars, self.config.max_new_tokens, store_all=self.shared_store,
        )
        session.answerer = self.answerer
        self.sessions[stream_id] = session
        return session

    def collectors(self) -> list[Any]:
        """Prometheus collectors beyond the server's own, which see everything in this process:
        the vLLM answer process's metrics when it answers."""
        if self.answerer is None:
            return []
        from streamvqa.answering.metrics import VLLMCollector

        return [VLLMCollector(self.answerer)]

    def get(self, stream_id: str) -> StreamSession:
        if stream_id not in self.sessions:
            raise EngineError("unknown_stream", f"no stream {stream_id!r}")
        return self.sessions[stream_id]

    def close_stream(self, stream_id: str) -> None:
        self.get(stream_id).close()
        del self.sessions[stream_id]
