"""The stream registry: one engine session + one ingest source (PyAV worker or WHIP) per stream.

Streams whose ingest failed or ended stay (and their memory stays answerable) for
``stream_retention_s``, then the reaper deletes them; only live streams count against
``max_streams`` and the keys' stream quotas."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from streamvqa.policies.registry import canonical
from streamvqa.proto import ApiError, LastError, StreamCreate, StreamInfo
from streamvqa.workers.ingest import Frame, IngestConfig, IngestError, IngestStats, IngestWorker, probe_source

from .probe_pool import SourcePool
from .settings import ServerSettings
from .thumbnails import ThumbnailStore
from .urlpolicy import UrlPolicy

log = logging.getLogger(__name__)


def engine_error(e: Exception) -> ApiError:
    """Map an engine exception (``EngineError(code, message)``) to an :class:`ApiError`."""
    code = getattr(e, "code", None)
    message = getattr(e, "message", None) or str(e)
    if isinstance(code, str):
        return ApiError(code, message)
    return ApiError("internal_error", f"{type(e).__name__}: {e}")


def failed_stream_error(entry: StreamEntry, e: ApiError) -> ApiError:
    """``empty_stream`` on a stream whose source failed is ``stream_failed`` with the source's
    last error: no frame will ever come, so "no encoded frames yet" would mislead."""
    if e.code != "empty_stream":
        return e
    ing = entry.ingest_stats()
    if ing.state != "failed":
        return _seen_nothing_error(entry, e)
    err = ing.last_error or {}
    return ApiError("stream_failed", f"the stream's source failed ({err.get('code', 'unknown')}): "
                                     f"{err.get('message', '')}")


def _seen_nothing_error(entry: StreamEntry, e: ApiError) -> ApiError:
    """``empty_stream`` on a stream whose frames were all encoded into nothing (the model found
    nothing to see in them: no tokens, no memory) says so, instead of "no encoded frames yet"."""
    ses = session_stats(entry.session)
    encoded = int(ses.get("frames_encoded", 0) or 0)
    if encoded == 0 or int(ses.get("units_encoded", 0) or 0) > 0 or "no encoded frames" not in e.message:
        return e
    return ApiError("empty_stream", f"the model saw nothing in this stream's {encoded} encoded frame(s): "
                                    "they gave it no tokens, so there is nothing to answer from yet")


def session_stats(session: Any) -> dict[str, Any]:
    """``session.stats()`` as a dict (the engine returns a dataclass-like ``SessionStats``)."""
    try:
        s = session.stats()
    except Exception:  # a closed session must not break GET or /metrics
        return {}
    if isinstance(s, dict):
        return s
    if hasattr(s, "__dataclass_fields__"):
        return {k: getattr(s, k) for k in s.__dataclass_fields__}
    if hasattr(s, "model_dump"):
        return s.model_dump()
    return dict(vars(s))


FINAL_STATES = frozenset({"ended", "failed", "stopped"})


@dataclass
class StreamEntry:
    """One registered stream."""

    id: str
    url: str
    method: str
    fps: float
    name: str | None
    session: Any
    source: Any  # IngestWorker or WhipSession: .state, .stats(), .last_error
    created_at: float = field(default_factory=time.time)
    options: dict[str, Any] = field(default_factory=dict)
    owner: str | None = None  # the API key name that created it (None: auth off)
    active_questions: int = 0  # questions in flight (REST + WebSocket), on the event loop
    final_at: float | None = None  # monotonic time the reaper first saw the ingest final
    thumbnails: ThumbnailStore | None = None  # the registry's frame pictures (evidence cites them)

    def is_live(self) -> bool:
        """Ingest not failed, ended or stopped: the stream holds a slot."""
        return str(self.ingest_stats().state) not in FINAL_STATES

    def memory_bytes(self) -> int:
        """KV bytes this stream holds, all tiers."""
        kv = session_stats(self.session).get("kv_bytes") or {}
        try:
            return int(sum(int(v) for v in kv.values()))
        except (TypeError, ValueError, AttributeError):
            return 0

    @property
    def kind(self) -> str:
        return "whip" if self.url.startswith("whip:") else "pyav"

    def ingest_stats(self) -> IngestStats:
        return self.source.stats()

    def info(self) -> StreamInfo:
        ing = self.ingest_stats()
        ses = session_stats(self.session)
        err = ing.last_error
        return StreamInfo(
            id=self.id,
            name=self.name,
            url=self.url,
            state=ing.state,
            method=self.method,
            fps=self.fps,
            frames_decoded=ing.frames_decoded,
            frames_sampled=ing.frames_sampled,
            frames_delivered=ing.frames_delivered,
            frames_encoded=int(ses.get("frames_encoded", 0) or 0),
            frames_dropped=dict(ing.frames_dropped),
            units_encoded=int(ses.get("units_encoded", 0) or 0),
            reconnects=ing.reconnects,
            encode_lag_s=ing.encode_lag_s,
            last_frame_t=ses.get("last_frame_t"),
            memory_bytes={str(k): int(v) for k, v in (ses.get("kv_bytes") or {}).items()},
            memory_blocks={str(k): int(v) for k, v in (ses.get("kv_blocks") or {}).items()},
            last_error=LastError(**err) if err else None,
            time_base=ing.time_base,
            created_at=self.created_at,
        )


@dataclass
class RetiredTotals:
    """Counters of deleted streams, so Prometheus counters never go backwards."""

    frames_decoded: int = 0
    frames_encoded: int = 0
    frames_dropped: dict[str, int] = field(default_factory=dict)

    def add(self, entry: StreamEntry) -> None:
        ing = entry.ingest_stats()
        self.frames_decoded += ing.frames_decoded
        self.frames_encoded += int(session_stats(entry.session).get("frames_encoded", 0) or 0)
        for reason, n in ing.frames_dropped.items():
            self.frames_dropped[reason] = self.frames_dropped.get(reason, 0) + n


class StreamRegistry:
    """Creates, lists and deletes streams. All coroutine methods run on the server's event loop."""

    def __init__(self, engine: Any, settings: ServerSettings, policy: UrlPolicy | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.policy = policy or UrlPolicy(settings)
        self._streams: dict[str, StreamEntry] = {}
        self._lock = threading.Lock()  # the metrics collector reads from a scrape thread
        self.retired = RetiredTotals()
        self.sources = SourcePool(settings.probe_workers, settings.probe_timeout_s,
                                  lifecycle_workers=min(32, settings.max_streams + 4))
        self._reaper: asyncio.Task[None] | None = None
        self.thumbnails = ThumbnailStore(settings.thumbnail_budget_bytes, settings.thumbnail_max_side)
        # cluster mode (streamvqa/cluster): told of streams added/removed here; the keys' quotas
        # counted over every replica instead of this one's streams
        self.listeners: list[Any] = []
        self.cluster_quota: Any = None

    # -- lookups ------------------------------------------------------------------------------

    def get(self, stream_id: str, owner: str | None = None) -> StreamEntry:
        """The stream; ``unknown_stream`` if there is none or (``owner`` given) another key owns it."""
        with self._lock:
            entry = self._streams.get(stream_id)
        if entry is None or (owner is not None and entry.owner != owner):
            raise ApiError("unknown_stream", f"no stream {stream_id!r}")
        return entry

    def list(self, owner: str | None = None) -> list[StreamEntry]:
        """All streams, or (``owner`` given) that key's."""
        with self._lock:
            return [e for e in self._streams.values() if owner is None or e.owner == owner]

    def snapshot(self) -> tuple[list[StreamEntry], RetiredTotals]:
        with self._lock:
            return list(self._streams.values()), RetiredTotals(
                self.retired.frames_decoded, self.retired.frames_encoded, dict(self.retired.frames_dropped)
            )

    # -- validation ---------------------------------------------------------------------------

    def resolve_method(self, method: str | None) -> str:
        """The requested method, or the default; ``unknown_method`` if the engine lacks it."""
        methods = list(self.engine.methods())
        if method is None:
            method = self.settings.default_method or ("rekv" if "rekv" in methods else methods[0])
        method = canonical(method)  # v-rex, vrex: resv
        if method not in methods:
            raise ApiError("unknown_method", f"unknown method {method!r}; available: {', '.join(methods)}")
        return method

    def _check_capacity(self, quota: Any = None) -> None:
        """Server-wide cap on live streams, then the caller's quotas (``quota``: a Principal or
        None): live streams, and memory (all its streams, failed/ended ones included)."""
        n = sum(1 for e in self.list() if e.is_live())
        if n >= self.settings.max_streams:
            raise ApiError("too_many_streams", f"at most {self.settings.max_streams} live streams per server")
        owner = getattr(quota, "owner", None)
        if owner is None:
            return
        if self.cluster_quota is not None:
            self.cluster_quota(owner, quota)
            return
        mine = self.list(owner)
        max_streams = getattr(quota, "max_streams", None)
        if max_streams is not None and sum(1 for e in mine if e.is_live()) >= max_streams:
            raise ApiError("quota_exceeded", f"at most {max_streams} live streams for this API key")
        max_memory = getattr(quota, "max_memory_bytes", None)
        if max_memory is not None:
            used = sum(e.memory_bytes() for e in mine)
            if used >= max_memory:
                raise ApiError("quota_exceeded", f"this API key's streams hold {used} bytes; quota {max_memory}")

    def ingest_config(self, url: str, fps: float, address: str | None = None) -> IngestConfig:
        s = self.settings
        try:
            return IngestConfig(
                url=url,
                address=address,
                fps=fps,
                open_timeout_s=s.open_timeout_s,
                read_timeout_s=s.read_timeout_s,
                max_retries=s.max_retries,
                realtime=s.realtime_files,
                queue_size=s.ingest_queue_size,
                max_decode_width=s.max_decode_width,
                max_decode_height=s.max_decode_height,
                max_width=min(1280, s.max_decode_width),
                max_height=min(720, s.max_decode_height),
            )
        except ValidationError as e:
            err = e.errors()[0]
            code = "unsupported_scheme" if err["type"] == "unsupported_scheme" else "invalid_request"
            raise ApiError(code, str(err["msg"])) from None

    # -- lifecycle ----------------------------------------------------------------------------

    def _open_session(self, stream_id: str, method: str, options: dict[str, Any]) -> Any:
        try:
            return self.engine.open_stream(stream_id, method=method, options=options)
        except Exception as e:
            raise engine_error(e) from e

    def _sink(self, session: Any, stream_id: str):
        thumbnails = self.thumbnails
        scheduler = getattr(self.engine, "scheduler", None)  # batches streams, sheds fairly

        def push(frame: Frame) -> None:
            if scheduler is None:
                session.push_frame(frame.image, frame.t)
            else:
                scheduler.encode(session, frame.image, frame.t, frame.arrival)
            try:  # a picture for the console; never at the cost of ingest
                thumbnails.add(stream_id, frame.t, frame.image)
            except Exception as e:
                log.debug("thumbnail %s: %s", stream_id, e)

        return push

    def _add(self, entry: StreamEntry) -> None:
        with self._lock:
            self._streams[entry.id] = entry
        for listener in self.listeners:
            listener.stream_added(entry)

    async def create(self, req: StreamCreate, probe: bool = False, principal: Any = None,
                     stream_id: str | None = None, prepare: Any = None) -> StreamEntry:
        """Validate, check the URL policy, optionally probe, open the engine session, start ingest.

        ``principal`` (auth on): the caller, who becomes the owner and whose quotas apply.
        ``stream_id``/``prepare`` (cluster failover): the id of an adopted stream, and a call
        ``prepare(session) -> resume_after`` that rebuilds the session from the store first.
        """
        fps = req.fps or self.settings.default_fps
        config = self.ingest_config(req.url, fps)
        method = self.resolve_method(req.method)
        self._check_capacity(principal)
        checked = await self.policy.check(config.url)
        if (checked.url, checked.address) != (config.url, None):
            config = self.ingest_config(checked.url, fps, checked.address)
        if probe:
            try:
                await self.sources.probe(probe_source, config)
            except IngestError as e:
                raise ApiError(e.code, e.message) from e
        stream_id = stream_id or "s_" + uuid.uuid4().hex[:16]
        options = dict(req.options or {})
        # again, with no await from here to _add: concurrent creates may have taken the slots while
        # this one was checking the URL or probing
        self._check_capacity(principal)
        session = self._open_session(stream_id, method, options)
        # adoption only (cluster): the rebuild waits off the loop; the claim, not this check, bounds it
        resume_after = await asyncio.to_thread(prepare, session) if prepare is not None else None
        remote = getattr(session, "remote_ingest", None)  # multi topology: the encoder ingests
        if remote is not None:
            worker = remote(config, stream_id)
        else:
            worker = IngestWorker(config, self._sink(session, stream_id), name=stream_id, resume_after=resume_after)
        entry = StreamEntry(stream_id, req.url.strip(), method, fps, req.name, session, worker, options=options,
                            owner=getattr(principal, "owner", None), thumbnails=self.thumbnails)
        self._add(entry)
        worker.start()
        log.info("stream %s: %s (method %s, fps %g)", stream_id, config.url, method, fps)
        return entry

    async def create_whip(
        self, offer_sdp: str, *, method: str | None, fps: float | None, name: str | None, principal: Any = None
    ) -> tuple[StreamEntry, str]:
        """Accept a WHIP offer as a new stream; returns the entry and the SDP answer."""
        from streamvqa.workers.ingest.whip import WhipSession  # aiortc is optional

        fps = fps or self.settings.default_fps
        method = self.resolve_method(method)
        self._check_capacity(principal)
        stream_id = "w_" + uuid.uuid4().hex[:16]
        session = self._open_session(stream_id, method, {})
        try:
            whip, answer = await WhipSession.create(
                offer_sdp,
                self._sink(session, stream_id),
                fps=fps,
                connect_timeout_s=self.settings.whip_connect_timeout_s,
                session_id=stream_id,
                ice_addresses=self.settings.whip_ice_addresses or None,
            )
        except IngestError as e:
            self._close_session(stream_id)
            raise ApiError(e.code, e.message) from e
        except BaseException:
            self._close_session(stream_id)
            raise
        try:  # again: other streams may have taken the slots while the peer connected
            self._check_capacity(principal)
        except ApiError:
            await whip.close()
            self._close_session(stream_id)
            raise
        entry = StreamEntry(stream_id, f"whip://{stream_id}", method, fps, name, session, whip,
                            owner=getattr(principal, "owner", None), thumbnails=self.thumbnails)
        self._add(entry)
        return entry, answer

    def _close_session(self, stream_id: str) -> None:
        try:
            self.engine.close_stream(stream_id)
        except Exception as e:  # already closed, or the engine is shutting down
            log.debug("close_stream %s: %s", stream_id, e)

    async def delete(self, stream_id: str, owner: str | None = None) -> None:
        """Stop ingest, close the engine session, forget the stream (``owner``: only theirs)."""
        entry = self.get(stream_id, owner)
        with self._lock:
            if self._streams.pop(stream_id, None) is None:
                raise ApiError("unknown_stream", f"no stream {stream_id!r}")
        if entry.kind == "whip":
            await entry.source.close()
        else:
            await self.sources.run(entry.source.stop)
        with self._lock:
            self.retired.add(entry)
        await self.sources.run(self._close_session, stream_id)
        self.thumbnails.drop(stream_id)
        for listener in self.listeners:
            listener.stream_removed(entry)
        log.info("stream %s deleted", stream_id)

    async def end_whip(self, stream_id: str, owner: str | None = None) -> StreamEntry:
        """The publisher's WHIP ``DELETE``: stop receiving; the stream stays (``ended``, its memory
        answerable, like a file that ended) until its owner deletes it or the reaper does."""
        entry = self.get(stream_id, owner)
        if entry.kind != "whip":
            raise ApiError("unknown_stream", f"{stream_id!r} is not a WHIP session")
        await entry.source.end()
        log.info("stream %s: the WHIP publisher ended the session", stream_id)
        return entry

    async def detach(self, stream_id: str) -> StreamEntry | None:
        """Stop a stream's ingest and forget it here, leaving its stored blocks in place (cluster:
        another replica owns it now, or takes it over after this one shuts down)."""
        with self._lock:
            entry = self._streams.pop(stream_id, None)
        if entry is None:
            return None
        if entry.kind == "whip":
            await entry.source.close()
        else:
            await self.sources.run(entry.source.stop)
        with self._lock:
            self.retired.add(entry)
        self.thumbnails.drop(stream_id)
        sessions = getattr(self.engine, "sessions", None)
        if isinstance(sessions, dict):  # not close_stream: that would delete the blocks
            sessions.pop(stream_id, None)
        return entry

    # -- reaping ------------------------------------------------------------------------------

    async def reap(self, now: float | None = None) -> list[str]:
        """Delete streams whose ingest has been final for ``stream_retention_s``; returns their ids.
        A stream with a question in flight waits for the next sweep."""
        now = time.monotonic() if now is None else now
        reaped = []
        for entry in self.list():
            if entry.is_live():
                continue
            if entry.final_at is None:
                entry.final_at = now
            if now - entry.final_at >= self.settings.stream_retention_s and entry.active_questions == 0:
                state = entry.ingest_stats().state
                try:
                    await self.delete(entry.id)
                except ApiError:  # deleted meanwhile
                    continue
                log.info("stream %s reaped (%s for %gs)", entry.id, state, self.settings.stream_retention_s)
                reaped.append(entry.id)
        return reaped

    async def _reap_loop(self) -> None:
        interval = min(5.0, max(0.05, self.settings.stream_retention_s / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reap()
            except Exception:  # a sweep must never end the loop
                log.exception("stream reaper")

    def start_reaper(self) -> None:
        """Sweep for expired streams in the background (call on the server's loop)."""
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap_loop(), name="stream-reaper")

    async def close_all(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        for entry in self.list():
            try:
                await self.delete(entry.id)
            except ApiError:
                pass
        self.sources.close()
