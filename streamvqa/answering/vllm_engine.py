"""The `vllm` answer engine: stage 9 in a vLLM process, over the memory the session assembled.

For a question the session has retrieved and assembled its answer cache (the sink and the chosen
blocks, rotated, as transformers would attend to them). Here that cache becomes:
- a prompt of token ids: one placeholder id per memory token, then the question's ids;
- a file of the memory's KV in shared memory (`kvfile`), which the KV connector writes into
  vLLM's paged cache (`connector.py`). Each layer's keys and values go from the answer cache
  into the file's mapping in one pass (`export_memory`), the shift below applied on the way.

Positions: vLLM puts prompt token i at position i (at (i, i, i) under Qwen's M-RoPE for text);
the session puts the question at `end` after a memory of `length` tokens (with M-RoPE a vision
block advances positions by max(h, w), not by its h * w tokens, so `end` is not `length`).
Every memory key is rotated by ``length - end`` in every position row (RoPE composes:
R(p + d) = R(d) R(p), row by row for M-RoPE's sections), a uniform shift that leaves attention
unchanged, so the question and the answer tokens see the memory exactly as in the transformers
engine.

The model: vLLM loads the language model alone (the vision tower never runs in vLLM: the memory
is already KV), exported once per fingerprint (`export_lm`). The default model's is a Llama
(SmolLM2, its LoRA merged). Qwen2-VL's and Qwen2.5-VL's is exported as a plain
`Qwen2ForCausalLM`: the same decoder (biased q/k/v, RMSNorm, SwiGLU), and M-RoPE at (i, i, i)
is 1-D RoPE at i (every section rotates by the same position), which is what vLLM gives a
text-only prompt.

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
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from streamvqa.answering import kvfile
from streamvqa.answering.vllm_process import RequestFailed, Unavailable, VLLMOptions, VLLMProcess, vllm_python
from streamvqa.engine.errors import EngineError
from streamvqa.models.base import ModelAdapter, Piece, rotate_half
from streamvqa.models.smollm2 import cache_root

log = logging.getLogger(__name__)

# families whose language model vLLM loads from the exported directory (the LM alone: the vision
# tower never runs in vLLM, the memory is already KV)
QWEN2_LM = {"qwen2_vl", "qwen2_5_vl"}  # exported as Qwen2ForCausalLM (`qwen2_lm`)
FAMILIES = {"default"} | QWEN2_LM


def qwen2_lm(adapter: ModelAdapter) -> torch.nn.Module:
    """Qwen2-VL's / Qwen2.5-VL's language model as a `Qwen2ForCausalLM` with the same weights.

    Exact for text positions: M-RoPE at (p, p, p) rotates every frequency by p, as 1-D RoPE with
    the same theta does; only the default rope type (theta alone) maps so."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tc = adapter.text_config
    rope = dict(tc.rope_parameters)
    if rope.get("rope_type", "default") != "default":
        raise EngineError("unsupported_for_engine", f"the vllm answer engine serves default M-RoPE; "
                                                    f"not rope_type {rope['rope_type']!r}")
    if getattr(tc, "use_sliding_window", False):
        raise EngineError("unsupported_for_engine", "the vllm answer engine serves full-attention Qwen2 LMs; "
                                                    "this one uses a sliding window")
    tied = adapter.lm_head.weight is adapter.backbone.get_input_embeddings().weight
    cfg = Qwen2Config(
        vocab_size=tc.vocab_size, hidden_size=tc.hidden_size, intermediate_size=tc.intermediate_size,
        num_hidden_layers=tc.num_hidden_layers, num_attention_heads=tc.num_attention_heads,
        num_key_value_heads=tc.num_key_value_heads, hidden_act=tc.hidden_act,
        max_position_embeddings=tc.max_position_embeddings, rms_norm_eps=tc.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": rope["rope_theta"]},
        tie_word_embeddings=tied, use_sliding_window=False, attention_dropout=0.0,
        bos_token_id=tc.bos_token_id, eos_token_id=tc.eos_token_id, pad_token_id=tc.pad_token_id,
    )
    if adapter.head_dim != cfg.hidden_size // cfg.num_attention_heads:
        raise EngineError("unsupported_for_engine", "the exported Qwen2 LM needs head_dim = hidden / heads")
    lm = Qwen2ForCausalLM(cfg).to(adapter.dtype).eval()
    lm.model.load_state_dict(adapter.backbone.state_dict(), strict=True)
    if not tied:
        lm.lm_head.load_state_dict(adapter.lm_head.state_dict(), strict=True)
    return lm


def weights_digest(adapter: ModelAdapter) -> str:
    """A cheap digest of the language model's weights (names, shapes, each tensor's first values):
    two checkpoints of one config and directory name do not share an export."""
    h = hashlib.blake2b(digest_size=8)
    for name, t in sorted({**adapter.backbone.state_dict(), "lm_head": adapter.lm_head.weight}.items()):
        h.update(f"{name}{tuple(t.shape)}".encode())
        h.update(t.detach().reshape(-1)[:64].float().cpu().numpy().tobytes())
    return h.hexdigest()


def export_lm(adapter: ModelAdapter) -> Path:
    """The adapter's language model (adapters merged) as a local Hugging Face directory, written
    once per model fingerprint."""
    out = cache_root() / "vllm" / f"{adapter.fingerprint()}-{weights_digest(adapter)}"
    if (out / "config.json").exists():
        return out
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    lm = qwen2_lm(adapter) if adapter.family in QWEN2_LM else adapter.model
    lm.save_pretrained(tmp, safe_serialization=True)
    if adapter.tokenizer is not None:
        adapter.tokenizer.save_pretrained(tmp)
    os.replace(tmp, out)
    return out


@torch.inference_mode()
def export_memory(adapter: ModelAdapter, cache, length: int, shift: int, rows: int, out: torch.Tensor) -> None:
    """Each layer's first `length` keys (rotated by `shift` in all `rows` position rows) and
    values, written once, straight from the answer cache into `out` ([layers, 2, tokens, heads,
    head_dim], a shared-memory file's mapping).

    A uniform shift is one rotation for every token: cos and sin of `shift` ([head_dim]), applied
    half by half (RoPE's rotate_half layout) into `out`, so no intermediate tensor is made."""
    if shift:
        like = cache.layers[0].keys  # the rotary module takes its dtype and device
        cos, sin = adapter.rotary(like, adapter.position_ids(torch.full((rows, 1), shift)))
        cos, sin = cos.reshape(-1), sin.reshape(-1)
        h = cos.numel() // 2
    for i, layer in enumerate(cache.layers):
        k = layer.keys[0, :, :length].transpose(0, 1)  # [tokens, heads, d]: views
        v = layer.values[0, :, :length].transpose(0, 1)
        dst = out[i, 0]
        if not shift:
            dst.copy_(k)
        elif k.device != dst.device:  # a GPU cache: rotated there, then one copy to the host
            dst.copy_(k * cos + rotate_half(k) * sin)
        else:  # dst = k * cos + rotate_half(k) * sin, rotate_half(k) = (-k2, k1)
            k1, k2, d1, d2 = k[..., :h], k[..., h:], dst[..., :h], dst[..., h:]
            torch.mul(k1, cos[:h], out=d1)
            d1.addcmul_(k2, sin[:h], value=-1)
            torch.mul(k2, cos[h:], out=d2)
            d2.addcmul_(k1, sin[h:])
        out[i, 1].copy_(v)


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
                              f"the vllm answer engine serves the default model and the Qwen2-VL "
                              f"family (qwen2_vl, qwen2_5_vl); not the {adapter.family} family")
        if vllm_python(self.options.python) is None:
            raise EngineError("unsupported_for_engine",
                              "the vllm answer engine needs .venv-vllm: run `bash tools/setup.sh --vllm`")
        self.adapter = adapter
        self.dtype = str(adapter.dtype).removeprefix("torch.")
        self.process = VLLMProcess(export_lm(adapter), self.dtype, self.options)
        self.pool = kvfile.Pool(self.process.kv_dir)  # the memories' shared-memory files, reused
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
        self.pool.close()
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
        first = cache.layers[0].keys
        spec = kvfile.KVSpec(path="", layers=len(cache.layers), heads=first.shape[1], tokens=length,
                             head_dim=first.shape[-1], dtype=self.dtype)
        buf = self.pool.acquire(spec.nbytes)
        spec = replace(spec, path=buf.path)
        try:
            export_memory(self.adapter, cache, length, shift, getattr(session.tracker, "rows", 1), buf.array(spec))
        except BaseException:
            self.pool.release(buf, reusable=True)  # never handed to vLLM
            raise
        identity = repr((session.nonce, assembled.key, end, length)).encode()
        prompt = placeholder_ids(identity, length, self.vocab) + qids
        with self._lock:
            self.questions += 1
            self.kv_bytes += spec.nbytes
            self.kv_tokens += length
            self.export_seconds += time.perf_counter() - t0
        msg = {"prompt": prompt, "kv": {**spec.to_dict(), "spans": assembled.spans}, "max_tokens": max_tokens, "temperature": temperature,
               "top_p": top_p, "seed": seed, "stop": sorted(self.adapter.eos_ids)}
        return self._tokens(msg, buf)

    def _tokens(self, msg: dict, buf: kvfile.Buffer) -> Iterator[int]:
        loaded = False  # vLLM is done reading the memory: its file may be reused
        try:
            for tok in self.process.generate(msg):
                loaded = True  # a token: the step that computed it had loaded the memory before
                yield tok
            loaded = True  # finished: vLLM forgot the request
        except Unavailable as e:
            raise EngineError("worker_unavailable", f"{e}; retry shortly") from None
        except RequestFailed as e:
            log.error("vLLM refused a request: %s", e)
            raise EngineError("internal_error", "the vLLM answer engine failed the request") from None
        finally:
            self.pool.release(buf, reusable=loaded)
