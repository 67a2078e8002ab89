"""`RemoteStore`: the `BlockStore` protocol for workers, backed by the kvstore service.

- put: encode the block into a staging segment this process creates (store prefix, own PID in
  the name, so the store's janitor reclaims it if we die mid-put), ask the store to take it,
  unlink the segment once acknowledged. Retried while the store restarts (a put of the same
  block twice is an overwrite), up to `put_timeout_s`.
- get_many: lease the blocks (the store promotes cold ones into shared memory), map the
  segments, copy the tensors out (into pinned buffers when the reader's device is CUDA), release
  the lease. No block byte crosses a socket.
- index: representative keys and times over the socket (small), plus each block's tier and the
  blocks left out because their only copy sits in a tier that is down (`last_unavailable`).
"""

from __future__ import annotations

import logging
import threading
import time

import torch

from streamvqa.proto import ipc
from streamvqa.store import format as fmt
from streamvqa.store import shm
from streamvqa.store.base import StreamIndex
from streamvqa.store.block import Block
from streamvqa.store.errors import BlockNotFoundError, StoreError
from streamvqa.store.leases import BlockDescriptor, map_block
from streamvqa.workers.multi.rpc import RpcClient

log = logging.getLogger(__name__)

_RETRY = ("worker_unavailable", "timeout", "store_not_open")


class RemoteStore:
    tier = "host"

    def __init__(self, client: RpcClient, fingerprint: str, shm_prefix: str, *, device: str = "cpu",
                 lease_ttl_s: float = 30.0, put_timeout_s: float = 120.0, call_timeout_s: float = 30.0) -> None:
        self.client = client
        self.fingerprint = fingerprint
        self.shm_prefix = shm_prefix
        self.device = device
        self.lease_ttl_s = lease_ttl_s
        self.put_timeout_s = put_timeout_s
        self.call_timeout_s = call_timeout_s
        self._tiers: dict[tuple[str, int], str | None] = {}
        self._unavailable: dict[str, list[int]] = {}
        self._times: dict[str, dict[int, tuple[float, float]]] = {}  # blocks ever listed -> times
        self._lock = threading.Lock()
        self.degraded: list[str] = []

    # -- plumbing ---------------------------------------------------------------------------
    def open(self) -> None:
        self.client.call("store.open", ipc.OpenStore(fingerprint=self.fingerprint), timeout=self.call_timeout_s)

    def connect(self, retry_for: float) -> None:
        """Open the store for this model (`store.open`), retrying for up to `retry_for` seconds
        while the kvstore starts."""
        self._call("store.open", ipc.OpenStore(fingerprint=self.fingerprint), retry_for=retry_for)

    def _call(self, op: str, body, *, timeout: float | None = None, retry_for: float = 0.0):
        """A call that re-sends store.open after a store restart, and retries transport
        failures for up to `retry_for` seconds."""
        deadline = time.monotonic() + retry_for
        delay = 0.05
        while True:
            try:
                return self.client.call(op, body, timeout=timeout or self.call_timeout_s)
            except ipc.IpcError as e:
                if e.code not in _RETRY:
                    raise _store_error(e) from None
                if e.code == "store_not_open":
                    try:
                        self.open()
                        continue
                    except ipc.IpcError:
                        pass
                if time.monotonic() + delay > deadline:
                    raise _store_error(e) from None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    # -- BlockStore -------------------------------------------------------------------------
    def put(self, block: Block) -> None:
        planned = fmt.plan(block, self.fingerprint)
        seg = shm.create_segment(shm.new_segment_name(self.shm_prefix), planned.size)
        try:
            planned.write_into(seg.buf)
            self._call(
                "store.put",
                ipc.PutBlock(stream_id=block.stream_id, index=block.index, segment=seg.name, length=planned.size),
                timeout=self.put_timeout_s,
                retry_for=self.put_timeout_s,
            )
        finally:
            shm.release_segment(seg, unlink=True)

    def get_many(self, stream_id: str, indices: list[int]) -> list[Block]:
        """Blocks in the order asked. A host tier too small to hold them all under one lease is
        read in smaller leases (each copied out and released before the next)."""
        if not indices:
            return []
        try:
            return self._lease_copy(stream_id, list(indices))
        except StoreError as e:
            if getattr(e, "code", None) != "host_full" or len(indices) == 1:
                raise
        half = len(indices) // 2
        return self.get_many(stream_id, indices[:half]) + self.get_many(stream_id, indices[half:])

    def _lease_copy(self, stream_id: str, indices: list[int]) -> list[Block]:
        reply, _ = self._call("store.lease", ipc.LeaseRequest(stream_id=stream_id, indices=indices,
                                                              ttl_s=self.lease_ttl_s), retry_for=5.0)
        descs = [BlockDescriptor(**d.model_dump()) for d in reply.descriptors]
        pinned = self.device.startswith("cuda") and torch.cuda.is_available()
        out: list[Block] = []
        try:
            for d in descs:
                with map_block(d, verify=False) as mapped:  # the store verified it on the way in
                    b = mapped.block
                    out.append(Block(
                        stream_id=b.stream_id, index=b.index, t_start=b.t_start, t_end=b.t_end,
                        keys=_own(b.keys, pinned), values=_own(b.values, pinned),
                        positions=b.positions.clone(), pos_start=b.pos_start, pos_end=b.pos_end,
                        rep_keys=b.rep_keys.clone(), meta=dict(b.meta),
                    ))
                    del b
        finally:
            try:
                self.client.call("store.release", ipc.ReleaseRequest(lease_id=descs[0].lease_id), timeout=5.0)
            except ipc.IpcError:  # the lease expires on its own
                pass
        return out

    def index(self, stream_id: str) -> StreamIndex:
        reply, atts = self._call("store.index", ipc.IndexRequest(stream_id=stream_id), retry_for=5.0)
        with self._lock:
            for i, t in zip(reply.indices, reply.tiers, strict=True):
                self._tiers[(stream_id, i)] = t
            self._unavailable[stream_id] = list(reply.unavailable)
            self._times.setdefault(stream_id, {}).update(
                {i: tuple(t) for i, t in zip(reply.indices, reply.times, strict=True)})
            self.degraded = list(reply.degraded)
        if not reply.indices:
            return StreamIndex([], torch.empty(0), [])
        rep = ipc.to_tensor(reply.rep_keys, atts)
        return StreamIndex(list(reply.indices), rep, [tuple(t) for t in reply.times])

    def unavailable(self, stream_id: str) -> list[int]:
        """Blocks the last `index` call left out (their tier was down)."""
        with self._lock:
            return list(self._unavailable.get(stream_id, []))

    def times_of(self, stream_id: str, indices: list[int]) -> dict[int, tuple[float, float]]:
        """Time ranges of blocks an earlier `index` call listed (for blocks since lost)."""
        with self._lock:
            known = self._times.get(stream_id, {})
            return {i: known[i] for i in indices if i in known}

    def tier_of(self, stream_id: str, index: int) -> str | None:
        with self._lock:
            return self._tiers.get((stream_id, index))

    def drop_stream(self, stream_id: str) -> None:
        with self._lock:
            self._tiers = {k: v for k, v in self._tiers.items() if k[0] != stream_id}
            self._unavailable.pop(stream_id, None)
            self._times.pop(stream_id, None)
        self._call("store.drop", ipc.StreamRef(stream_id=stream_id), retry_for=5.0)

    def usage(self, stream_id: str | None = None) -> ipc.Usage:
        """Bytes and blocks per tier. Quick to fail (callers sit on the server's event loop)."""
        try:
            reply, _ = self.client.call("store.usage", ipc.UsageRequest(stream_id=stream_id), timeout=2.0,
                                        connect_wait=0.2)
        except ipc.IpcError as e:
            if e.code != "store_not_open":
                raise _store_error(e) from None
            self.open()
            reply, _ = self.client.call("store.usage", ipc.UsageRequest(stream_id=stream_id), timeout=2.0)
        return reply

    def bytes_by_tier(self, stream_id: str | None = None) -> dict[str, int]:
        return self.usage(stream_id).bytes

    def blocks_by_tier(self, stream_id: str | None = None) -> dict[str, int]:
        return self.usage(stream_id).blocks

    def health(self) -> dict:
        reply, _ = self._call("store.health", ipc.Empty(), timeout=5.0)
        return reply.model_dump()

    def prefetch(self, stream_id: str, indices: list[int]) -> int:
        return 0  # leases promote on demand

    def close(self) -> None:
        pass  # the store belongs to the kvstore process


def _own(t: torch.Tensor, pinned: bool) -> torch.Tensor:
    """A copy that outlives the mapping; page-locked when it is headed for a GPU (fast, async H2D)."""
    if pinned:
        out = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        return out.copy_(t)
    return t.clone()


def _store_error(e: ipc.IpcError) -> StoreError:
    if e.code == "block_not_found":
        return BlockNotFoundError(e.message)
    err = StoreError(f"{e.code}: {e.message}")
    err.code = e.code  # type: ignore[attr-defined]
    return err
