"""A vLLM v1 KV connector that loads a question's stream memory into vLLM's paged KV cache.

Runs inside the vLLM process (`.venv-vllm`): imports only torch and vllm. vLLM loads it by
`KVTransferConfig(kv_connector="StreamMemoryConnector",
kv_connector_module_path="streamvqa.answering.connector")`.

The prompt of a question is ``placeholders + question ids``: one placeholder id per memory token
(the chat prefix, the retrieved blocks), derived from the memory's identity so vLLM's prefix
cache tells memories apart. The request's ``kv_transfer_params["streamvqa"]`` names the file of
that memory's KV (`kvfile.KVSpec`). The connector reports exactly the memory's tokens beyond
those vLLM already holds (a prefix-cache hit on a follow-up) as matched, synchronously, and
writes them into the blocks vLLM allocated, layer by layer, with the attention backend's own
cache-update op (so the layout is the backend's: CPU and CUDA differ). The file is mapped, not
read: each layer's keys and values are views of the mapping in the shape that op takes, so the
op's write into vLLM's blocks is the only copy on this side. At least one prompt token (the
question) is always left for vLLM to compute.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)
from vllm.model_executor.models.utils import extract_layer_index

from streamvqa.answering.kvfile import KVSpec, open_memory
from streamvqa.answering.tier_counts import COUNTS

PARAMS_KEY = "streamvqa"


@dataclass
class LoadStats:
    """What the worker side loaded; read by the vLLM server's /metrics (same process)."""

    requests: int = 0
    tokens: int = 0
    blocks: int = 0  # vLLM cache blocks written
    bytes: int = 0
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


STATS = LoadStats()


@dataclass
class Load:
    spec: dict  # KVSpec fields
    start: int  # first memory token to write (those before are in vLLM's prefix cache)
    block_ids: list[int]


@dataclass
class StreamMemoryMetadata(KVConnectorMetadata):
    loads: list[Load] = field(default_factory=list)


def memory_tokens(request: Any) -> int:
    """The memory tokens a request carries (0: an ordinary prompt)."""
    params = (getattr(request, "kv_transfer_params", None) or {}).get(PARAMS_KEY)
    return int(params["tokens"]) if params else 0


class StreamMemoryConnector(KVConnectorBase_V1):
    def __init__(self, vllm_config: Any, role: KVConnectorRole, kv_cache_config: Any = None) -> None:
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        self._block_size = vllm_config.cache_config.block_size
        self._loads: list[Load] = []  # scheduler side, until the next build_connector_meta
        self._caches: dict[str, torch.Tensor] = {}  # worker side: layer name -> paged cache

    # -- scheduler side ----------------------------------------------------------------------
    def get_num_new_matched_tokens(self, request: Any, num_computed_tokens: int) -> tuple[int, bool]:
        n = memory_tokens(request)
        n = min(n, request.num_prompt_tokens - 1)  # vLLM must compute at least one prompt token
        return max(0, n - num_computed_tokens), False

    def update_state_after_alloc(self, request: Any, blocks: Any, num_external_tokens: int) -> None:
        COUNTS.matched(min(memory_tokens(request), request.num_prompt_tokens - 1), num_external_tokens)
        if num_external_tokens <= 0:
            return
        n = min(memory_tokens(request), request.num_prompt_tokens - 1)
        spec = request.kv_transfer_params[PARAMS_KEY]
        self._loads.append(Load(spec=dict(spec), start=n - num_external_tokens,
                                block_ids=list(blocks.get_block_ids()[0])))

    def build_connector_meta(self, scheduler_output: Any) -> StreamMemoryMetadata:
        meta = StreamMemoryMetadata(loads=self._loads)
        self._loads = []
        return meta

    # -- worker side -------------------------------------------------------------------------
    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        self._caches = kv_caches

    def start_load_kv(self, forward_context: Any, **kwargs: Any) -> None:
        meta = self._get_connector_metadata()
        if not isinstance(meta, StreamMemoryMetadata) or not meta.loads:
            return
        t0 = time.perf_counter()
        layers = forward_context.no_compile_layers
        tokens = blocks = nbytes = 0
        for load in meta.loads:
            spec = KVSpec.from_dict(load.spec)
            n = min(spec.tokens, len(load.block_ids) * self._block_size)
            if n <= load.start:
                continue
            pos = torch.arange(load.start, n)
            ids = torch.tensor(load.block_ids, dtype=torch.long)
            slots = ids[pos // self._block_size] * self._block_size + pos % self._block_size
            kv = open_memory(spec)  # [layers, 2, tokens, heads, d], mapped: nothing is read yet
            for name, cache in self._caches.items():
                layer = layers[name]
                # views of the mapping, [t, heads, d] each: the op reads the file's pages as it
                # writes vLLM's blocks (the one copy on this side; .to is a no-op on CPU)
                k, v = kv[extract_layer_index(name), :, load.start:n].to(cache.device).unbind(0)
                layer.impl.do_kv_cache_update(layer, k, v, cache, slots.to(cache.device))
                nbytes += k.nbytes + v.nbytes
            tokens += n - load.start
            COUNTS.loaded(load.spec, load.start, n, spec.nbytes // spec.tokens)
            blocks += len({int(b) for b in ids[pos // self._block_size]})
        with STATS.lock:
            STATS.requests += len(meta.loads)
            STATS.tokens += tokens
            STATS.blocks += blocks
            STATS.bytes += nbytes
            STATS.seconds += time.perf_counter() - t0

    def wait_for_layer_load(self, layer_name: str) -> None:
        return  # loads are synchronous: everything was written in start_load_kv

    def save_kv_layer(self, layer_name: str, kv_layer: torch.Tensor, attn_metadata: Any, **kwargs: Any) -> None:
        return  # a load-only connector: the stream's memory lives in streamvqa's store

    def wait_for_save(self) -> None:
        return
