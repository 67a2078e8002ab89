"""The `kvstore` service: owns the TieredStore (host tier in shared memory -> disk -> Redis),
answers the index, hands out leases and descriptors, takes blocks staged in writers' segments.

Block bytes: a writer (encoder) stages the encoded block in a segment it creates under the
store's prefix (its PID in the name); `store.put` maps it, verifies checksum and fingerprint,
copies it into a store-owned segment and acknowledges; the writer then unlinks its staging
segment. A reader (answer worker) gets descriptors under a lease and maps store segments.
A janitor (at start and every `janitor_interval_s`) unlinks segments whose owner is dead: the
store's own after a crash, and staging segments of writers killed mid-put.

Health of cold tiers is probed in the background (a dead Redis must never stall an index
lookup); while a tier is down the index leaves out blocks held only there, and says which.

A durable store gets a spill area (``<run_dir>/spill`` unless configured): while its durable
tier (Redis) is down, acknowledged blocks go there, so encoding never waits on the outage.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from streamvqa.proto import ipc
from streamvqa.store import format as fmt
from streamvqa.store import shm
from streamvqa.store.config import TieredStoreConfig
from streamvqa.store.errors import StoreError, StoreFullError
from streamvqa.store.tiered import PENDING, TieredStore
from streamvqa.workers.multi.config import MultiConfig
from streamvqa.workers.multi.rpc import RpcServer

log = logging.getLogger(__name__)

SPILL_BYTES = 1 << 30  # the default spill area's bound (STREAMVQA_STORE_SPILL_BYTES with a path)


class KvStoreService:
    def __init__(self, config: MultiConfig, fingerprint: str | None = None) -> None:
        self.config = config
        self.store: TieredStore | None = None
        self._open_lock = threading.Lock()
        self._health: dict[str, Any] = {"ok": True, "degraded": [], "tiers": {}, "pending_items": 0}
        self._stop = threading.Event()
        removed = shm.janitor(config.shm_prefix)
        if removed:
            log.info("janitor: removed %d leftover segments", len(removed))
        if fingerprint:
            self._open(fingerprint)
        self._bg = threading.Thread(target=self._background, name="kvstore-health", daemon=True)
        self._bg.start()

    # -- lifecycle --------------------------------------------------------------------------
    def _open(self, fingerprint: str) -> TieredStore:
        with self._open_lock:
            if self.store is None:
                cfg = TieredStoreConfig.model_validate(
                    {**self.config.store, **self._spill_default(), "fingerprint": fingerprint})
                self.store = TieredStore(cfg)
                log.info("store open (%s): %d blocks recovered", fingerprint, self.store.stats()["recovered"])
            elif self.store.fingerprint != fingerprint:
                raise ipc.IpcError("fingerprint_mismatch",
                                   f"store holds {self.store.fingerprint}, client has {fingerprint}")
            return self.store

    def _spill_default(self) -> dict[str, Any]:
        """Durable stores without a configured spill area spill into the run directory."""
        if not self.config.store.get("durable") or self.config.store.get("spill"):
            return {}
        return {"spill": {"path": str(Path(self.config.run_dir) / "spill"), "budget_bytes": SPILL_BYTES}}

    def _need(self) -> TieredStore:
        if self.store is None:
            raise ipc.IpcError("store_not_open", "send store.open with the model fingerprint first")
        return self.store

    def _background(self) -> None:
        last_janitor = time.monotonic()
        while not self._stop.wait(0.5):
            if self.store is not None:
                try:
                    self._health = self._probe(self.store)
                except Exception as e:  # report, never die
                    self._health = {"ok": False, "degraded": [], "error": str(e), "tiers": {}, "pending_items": 0}
            if time.monotonic() - last_janitor > self.config.janitor_interval_s:
                last_janitor = time.monotonic()
                shm.janitor(self.config.shm_prefix)

    def _probe(self, store: TieredStore) -> dict[str, Any]:
        """The store's health, plus latency: a tier whose ping is slower than `slow_tier_s` is
        degraded like a dead one (answers come from warm tiers instead of waiting on it)."""
        h = store.health()
        for tier in store.tiers:
            ping = getattr(tier, "ping", None)
            info = h["tiers"].get(tier.name)
            if ping is None or info is None or not info.get("ok"):
                continue
            start = time.monotonic()
            try:
                ok = bool(ping())
            except Exception:
                ok = False
            info["ping_s"] = round(time.monotonic() - start, 6)
            if not ok or info["ping_s"] > self.config.slow_tier_s:
                info["ok"] = False
                info["slow"] = ok
                if tier.name not in h["degraded"]:
                    h["degraded"].append(tier.name)
        return h

    def close(self) -> None:
        self._stop.set()
        if self.store is not None:
            self.store.close(timeout=30)

    # -- handlers ---------------------------------------------------------------------------
    def handlers(self) -> dict:
        return {
            "ping": self.ping,
            "store.open": self.open,
            "store.put": self.put,
            "store.index": self.index,
            "store.lease": self.lease,
            "store.release": self.release,
            "store.drop": self.drop,
            "store.usage": self.usage,
            "store.health": self.health,
        }

    def ping(self, body: ipc.Ping, atts, emit) -> ipc.Pong:
        return ipc.Pong(role="kvstore", pid=_pid(), info={"open": self.store is not None})

    def open(self, body: ipc.OpenStore, atts, emit) -> ipc.StoreOpened:
        store = self._open(body.fingerprint)
        return ipc.StoreOpened(fingerprint=store.fingerprint, recovered=int(store.stats()["recovered"]))

    def put(self, body: ipc.PutBlock, atts, emit) -> ipc.PutAck:
        store = self._need()
        if not body.segment.startswith(self.config.shm_prefix + "-"):
            raise ipc.IpcError("invalid_message", "staging segments must carry the store's prefix")
        try:
            seg = shm.attach_segment(body.segment)
        except FileNotFoundError:
            raise ipc.IpcError("block_not_found", f"staging segment {body.segment} is gone") from None
        try:
            if body.length > seg.size:
                raise ipc.IpcError("invalid_message", f"length {body.length} > segment size {seg.size}")
            view = seg.buf[: body.length]
            failure: ipc.IpcError | None = None
            try:
                # zero-copy decode: the one copy is put() encoding into a store-owned segment
                block = fmt.decode(view, expect_fingerprint=store.fingerprint, copy=False, check=True)
                if (block.stream_id, block.index) != (body.stream_id, body.index):
                    raise ipc.IpcError("invalid_message", "the staged block is not the one announced")
                store.put(block)
            except (StoreError, ValueError) as e:  # e.g. spill area full past put_timeout_s
                failure = ipc.IpcError(_put_code(e), f"block {body.stream_id!r}#{body.index} not stored: {e}")
                _drop_frames(e)  # its traceback holds tensors that alias the segment
            finally:
                block = None
                del view
        finally:
            shm.release_segment(seg, unlink=False)  # the writer unlinks its own segment
        if failure is not None:
            raise failure
        return ipc.PutAck(stream_id=body.stream_id, index=body.index)

    def index(self, body: ipc.IndexRequest, atts, emit) -> tuple[ipc.IndexReply, list]:
        store = self._need()
        idx = store.index(body.stream_id)
        down = set(self._health.get("degraded") or [])
        keep, tiers = [], []
        lost = store.lost_blocks(body.stream_id)  # gone for good: reported, never listed
        unavailable = sorted(lost)
        degraded = sorted(down) + (["lost_blocks"] if lost else [])
        for pos, i in enumerate(idx.indices):
            tier = store.tier_of(body.stream_id, i)
            if body.available_only and (tier is None or (tier != PENDING and tier in down)):
                unavailable.append(i)
                continue
            keep.append(pos)
            tiers.append(tier)
        if not keep:
            return ipc.IndexReply(indices=[], times=[], tiers=[], unavailable=sorted(unavailable),
                                  degraded=degraded), []
        rep = idx.rep_keys if len(keep) == len(idx.indices) else idx.rep_keys[keep]
        ref, raw = ipc.tensor_ref(rep, 0)
        return ipc.IndexReply(
            indices=[idx.indices[p] for p in keep],
            times=[idx.times[p] for p in keep],
            tiers=tiers,
            unavailable=sorted(unavailable),
            degraded=degraded,
            rep_keys=ref,
        ), [raw]

    def lease(self, body: ipc.LeaseRequest, atts, emit) -> ipc.LeaseReply:
        try:
            descs = self._need().lease(body.stream_id, body.indices, ttl_s=body.ttl_s)
        except StoreError as e:
            if "leased" in str(e):  # the host tier cannot hold all of them at once: ask for fewer
                raise ipc.IpcError("host_full", str(e)) from None
            raise
        return ipc.LeaseReply(descriptors=[ipc.Descriptor(**d.to_dict()) for d in descs])

    def release(self, body: ipc.ReleaseRequest, atts, emit) -> ipc.Empty:
        self._need().release(body.lease_id)
        return ipc.Empty()

    def drop(self, body: ipc.StreamRef, atts, emit) -> ipc.Empty:
        self._need().drop_stream(body.stream_id)
        return ipc.Empty()

    def usage(self, body: ipc.UsageRequest, atts, emit) -> ipc.Usage:
        store = self._need()
        return ipc.Usage(bytes=store.bytes_by_tier(body.stream_id), blocks=store.blocks_by_tier(body.stream_id))

    def health(self, body: ipc.Empty, atts, emit) -> ipc.Health:
        store = self._need()  # the client re-opens a restarted store with its fingerprint
        h = dict(self._health)
        if not h.get("tiers"):  # opened since the last background probe
            h = self._health = self._probe(store)
        h["pending_items"] = store.stats()["pending_items"]  # no I/O: always current
        return ipc.Health(ok=bool(h.get("ok", False)), degraded=list(h.get("degraded") or []),
                          pending_items=int(h.get("pending_items") or 0), tiers=dict(h.get("tiers") or {}))


def _put_code(e: Exception) -> str:
    return "store_full" if isinstance(e, StoreFullError) else "store_error"


def _drop_frames(e: BaseException | None) -> None:
    """Clear the locals of a finished exception's frames (and its causes'), so nothing keeps a
    view of a shared-memory mapping alive: closing it would raise BufferError otherwise."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        traceback.clear_frames(e.__traceback__)
        e = e.__cause__ or e.__context__


def _pid() -> int:
    import os

    return os.getpid()


def serve(config: MultiConfig, fingerprint: str | None = None) -> None:
    """Run the kvstore service in the foreground (until SIGTERM/SIGINT)."""
    service = KvStoreService(config, fingerprint)
    server = RpcServer(config.endpoint("kvstore"), service.handlers(), threads=8)
    from streamvqa.workers.multi.process import run_until_signal

    run_until_signal(server, service.close)
