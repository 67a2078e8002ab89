"""The `vllm` answer engine: stage 9 in a vLLM process, over the memory the session assembled.

For a question the session has retrieved and assembled its answer cache (the sink and the chosen
blocks, rotated, as transformers would attend to them). Here that cache becomes:
- a prompt of token ids: one placeholder id per memory token, then the question's ids;
- a file of the memory's KV in shared memory (`kvfile`), which the KV connector writes into
  vLLM's paged cache (`connector.py`).

Positions: vLLM puts prompt token i at position i; the session puts the question at `end` after
a memory of `length` tokens. Every memory key is rotated by ``length - end`` (RoPE composes:
R(p + d) = R(d) R(p)), a uniform shift that leaves attention unchanged, so the question and the
answer tokens see the memory exactly as in the transformers engine.

Placeholder ids are a hash of the memory's identity (the session, the per-layer selection, the
layout end): vLLM's prefix cache then serves a follow-up over the same memory, and never serves
one memory's KV for another (a block's hash covers its ids and those before it).

What vLLM cannot take is answered by the transformers engine instead (counted by reason): a
memory whose layers hold different numbers of tokens (one token sequence serves every layer in
vLLM) and a question piece that is not plain text ids.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from streamvqa.answering import kvfile
from streamvqa.answering.vllm_process import RequestFailed, Unavailable, VLLMOptions, VLLMProcess, vllm_python
from streamvqa.engine.errors import EngineError
from streamvqa.models.base import ModelAdapter, Piece
from streamvqa.models.smollm2 import cache_root

log = logging.getLogger(__name__)

# families whose language model vLLM loads from the exported directory (the LM alone: the vision
# tower never runs in vLLM, the memory is already KV)
FAMILIES = {"default"}


def export_lm(adapter: ModelAdapter) -> Path:
    """The adapter's language model (adapters merged) as a local Hugging Face directory, written
    once per model fingerprint."""
    out = cache_root() / "vllm" / adapter.fingerprint()
    if (out / "config.json").exists():
        return out
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    adapter.model.save_pretrained(tmp, safe_serialization=True)
    if adapter.tokenizer is not None:
        adapter.tokenizer.save_pretrained(tmp)
    os.replace(tmp, out)
    return out


def placeholder_ids(identity: bytes, n: int, vocab: int) -> list[int]:
    """n ids in [0, vocab) drawn from a hash of `identity`: the same memory gives the same ids."""
    seed = int.from_bytes(hashlib.blake2b(identity, digest_size=8).digest(), "little")
    return np.random.default_rng(seed).integers(0, vocab, size=n).tolist()


def question_ids(piece: Piece) -> list[int] | None:
    if any(s.ids is None for s in piece):
        return None
    return torch.cat([s.ids for s in piece]).tolist() if piece else []


class VLLMAnswerEngine:
    name = "vllm"

    def __init__(self, adapter: ModelAdapter, options: VLLMOptions | None = None) -> None:
        self.options = options or VLLMOptions()
        if adapter.family not in FAMILIES:
            raise EngineError("unsupported_for_engine",
                              f"the vllm answer engine serves the default model; not the {adapter.family} family")
        if vllm_python(self.options.python) is None:
            raise EngineError("unsupported_for_engine",
                              "the vllm answer engine needs .venv-vllm: run `bash tools/setup.sh --vllm`")
        self.adapter = adapter
        self.dtype = str(adapter.dtype).removeprefix("torch.")
        self.process = VLLMProcess(export_lm(adapter), self.dtype, self.options)
        # the engine (and so the server's /ready) is ready once vLLM is: questions before would be 503s
        if not self.process.wait_ready(self.options.start_timeout_s):
            self.process.close()
            raise EngineError("worker_unavailable", "the vLLM answer process did not start in time")
        self.vocab = int(adapter.text_config.vocab_size)
        # threads that wait on vLLM's tokens for the server's questions in flight (StreamSession.ask)
        self.executor = ThreadPoolExecutor(self.options.max_num_seqs + 4, thread_name_prefix="svqa-vllm")
        self._lock = threading.Lock()
        # counted in the server (the connector's own counts come from the vLLM process)
        self.questions = 0
        self.fallbacks: dict[str, int] = {}
        self.kv_bytes = 0
        self.kv_tokens = 0
        self.export_seconds = 0.0

    def close(self) -> None:
        self.process.close()
        self.executor.shutdown(wait=False, cancel_futures=True)

    def _fallback(self, reason: str) -> None:
        with self._lock:
            self.fallbacks[reason] = self.fallbacks.get(reason, 0) + 1

    def start(self, session, assembled, end: int, piece: Piece, max_tokens: int, temperature: float,
              top_p: float, seed: int | None) -> Iterator[int] | None:
        """Submit the question; an iterator of the answer's token ids, or None when vLLM cannot
        take this memory (the session then answers it with its own model)."""
        t0 = time.perf_counter()
        cache = assembled.cache
        lengths = {layer.keys.shape[-2] for layer in cache.layers}
        if len(lengths) != 1:
            self._fallback("ragged_layers")
            return None
        if temperature > 2.0:  # vLLM's sampler refuses hotter ones; the API allows up to 10
            self._fallback("temperature")
            return None
        qids = question_ids(piece)
        if not qids:
            self._fallback("question_not_text")
            return None
        length = assembled.length
        if not self.process.ready:
            raise EngineError("worker_unavailable", "the vLLM answer process is restarting; retry shortly")
        shift = length - end
        keys = torch.stack([layer.keys[0, :, :length] for layer in cache.layers])  # [L, H, n, d]
        values = torch.stack([layer.values[0, :, :length] for layer in cache.layers])
        if shift:
            rows = getattr(session.tracker, "rows", 1)
            pos = torch.full((rows, length), shift, dtype=torch.long)
            keys = torch.stack([self.adapter.rotate(k, pos) for k in keys])
        kv = torch.stack([keys, values], dim=1).cpu().contiguous()  # [L, 2, H, n, d]
        if kv.dtype == torch.bfloat16:
            kv = kv.view(torch.int16)
        path = str(self.process.kv_dir / f"{uuid.uuid4().hex}.kv")
        kvfile.write(path, kv.numpy())
        spec = kvfile.KVSpec(path=path, layers=kv.shape[0], heads=kv.shape[2], tokens=length, head_dim=kv.shape[4],
                             dtype=self.dtype)
        identity = repr((session.nonce, assembled.key, end, length)).encode()
        prompt = placeholder_ids(identity, length, self.vocab) + qids
        with self._lock:
            self.questions += 1
            self.kv_bytes += spec.nbytes
            self.kv_tokens += length
            self.export_seconds += time.perf_counter() - t0
        msg = {"prompt": prompt, "kv": {**spec.to_dict(), "spans": assembled.spans}, "max_tokens": max_tokens, "temperature": temperature,
               "top_p": top_p, "seed": seed, "stop": sorted(self.adapter.eos_ids)}
        return self._tokens(msg, path)

    def _tokens(self, msg: dict, path: str) -> Iterator[int]:
        try:
            yield from self.process.generate(msg)
        except Unavailable as e:
            raise EngineError("worker_unavailable", f"{e}; retry shortly") from None
        except RequestFailed as e:
            log.error("vLLM refused a request: %s", e)
            raise EngineError("internal_error", "the vLLM answer engine failed the request") from None
        finally:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
