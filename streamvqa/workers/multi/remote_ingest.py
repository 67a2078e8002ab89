"""The server's handle on a URL source ingested by the stream's encoder (`enc_ingest.py`).

It has the shape of `IngestWorker` that the registry, API and metrics use (`start`, `stop`,
`stats`, `state`, `last_error`). A thread polls the encoder (`enc.poll`, every `interval_s`):
the ingest's counters, and the frames / units the session took since the previous poll, which
are added to the `RemoteSession`'s statistics and reported to the engine observers (metrics)
as in embedded mode.

Counters survive an encoder restart: those of the ingest that died are kept as a base and the
restarted ingest's are added (`restart`, called by `MultiEngine` after it resumed the stream),
and so are the time-base segments (the restarted ingest's continue the stream's time). While
the encoder is down, and until the restarted ingest decodes its first new frame, the stream
shows `recovering`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from streamvqa.proto import ipc
from streamvqa.workers.ingest import IngestConfig, IngestError, IngestState, IngestStats
from streamvqa.workers.ingest.timebase import joined
from streamvqa.workers.multi.rpc import RpcClient

log = logging.getLogger(__name__)

_COUNTERS = ("frames_decoded", "frames_sampled", "frames_delivered", "decode_errors", "reconnects")


def _add(base: IngestStats, d: dict) -> IngestStats:
    """`base` (earlier incarnations) plus the counters of the current ingest (`d`, to_dict())."""
    dropped = dict(base.frames_dropped)
    for k, v in (d.get("frames_dropped") or {}).items():
        dropped[k] = dropped.get(k, 0) + int(v)
    fields = {k: getattr(base, k) + int(d.get(k) or 0) for k in _COUNTERS}
    return IngestStats(
        state=str(d.get("state") or base.state), frames_dropped=dropped, encode_lag_s=float(d.get("encode_lag_s") or 0),
        last_decoded_t=d.get("last_decoded_t", base.last_decoded_t),
        last_delivered_t=d.get("last_delivered_t", base.last_delivered_t),
        width=d.get("width", base.width), height=d.get("height", base.height),
        last_error=d.get("last_error") or base.last_error, time_base=joined(base.time_base, d.get("time_base")),
        **fields,
    )


class IngestHost(Protocol):
    """The stream a `RemoteIngest` belongs to (`facade.RemoteSession`): its encoder, and where
    the polled frames and units go."""

    stream_id: str
    encoder: str  # the encoder worker's role

    def encoder_client(self) -> RpcClient: ...

    def encoder_up(self) -> bool: ...

    def took_remote(self, poll: ipc.IngestPoll) -> None: ...


class RemoteIngest:
    def __init__(self, session: IngestHost, config: IngestConfig, interval_s: float = 0.2) -> None:
        self.session = session
        self.config = config
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._base = IngestStats(state=IngestState.CONNECTING.value, frames_decoded=0, frames_sampled=0,
                                 frames_delivered=0)
        self._current: dict = {"state": IngestState.CONNECTING.value}
        self._stopped = threading.Event()
        self._final: str | None = None  # stopped (or failed to start)
        self._thread = threading.Thread(target=self._run, name=f"{session.stream_id}-poll", daemon=True)

    def _client(self) -> RpcClient:
        return self.session.encoder_client()

    def _send_start(self) -> None:
        body = ipc.StartIngest(stream_id=self.session.stream_id, config=self.config.model_dump())
        self._client().call("enc.ingest", body, timeout=30)

    # -- IngestWorker's shape ---------------------------------------------------------------
    def start(self) -> RemoteIngest:
        try:
            self._send_start()
        except ipc.IpcError as e:
            log.warning("stream %s: ingest not started on %s: %s", self.session.stream_id, self.session.encoder, e)
            if e.code not in ("worker_unavailable", "timeout"):  # refused: it will not start later either
                with self._lock:
                    self._current = {"state": IngestState.FAILED.value,
                                     "last_error": {"code": e.code, "message": e.message}}
            # (the encoder down: MultiEngine starts the ingest when it resumes the stream)
        self._thread.start()
        return self

    def restart(self) -> None:
        """The encoder restarted and the stream was resumed: start its ingest again there,
        keeping the counters so far (frames the dead encoder took but did not store are lost)."""
        if self._stopped.is_set():
            return
        with self._lock:
            if IngestState(self._current.get("state", "connecting")).is_final:
                return  # it had ended (or failed) before the encoder died: nothing to resume
            self._base = _add(self._base, self._current)
            self._base = IngestStats(**{**self._base.__dict__, "reconnects": self._base.reconnects + 1})
            self._current = {"state": IngestState.RECOVERING.value}
        try:
            self._send_start()
        except ipc.IpcError as e:
            log.warning("stream %s: ingest restart failed: %s", self.session.stream_id, e)

    def stats(self) -> IngestStats:
        with self._lock:
            s = _add(self._base, self._current)
        if self._final is not None:
            return IngestStats(**{**s.__dict__, "state": self._final})
        if not IngestState(s.state).is_final and not self.session.encoder_up():
            err = {"code": "worker_unavailable", "message": f"the {self.session.encoder} worker is restarting"}
            return IngestStats(**{**s.__dict__, "state": IngestState.RECOVERING.value, "last_error": err})
        return s

    @property
    def state(self) -> IngestState:
        return IngestState(self.stats().state)

    @property
    def last_error(self) -> IngestError | None:
        err = self.stats().last_error
        if not err:
            return None
        try:
            return IngestError(err["code"], err["message"])  # type: ignore[arg-type]
        except ValueError:  # a transport code (worker_unavailable), not an ingest one
            return None

    def wait(self, timeout: float | None = None) -> bool:
        """Until the ingest reached a final state (like `IngestWorker.wait`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.state.is_final:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(self.interval_s)
        return True

    def stop(self, timeout: float | None = None) -> bool:
        self._stopped.set()
        try:
            reply, _ = self._client().call("enc.ingest_stop", ipc.StreamRef(stream_id=self.session.stream_id),
                                           timeout=timeout or 30)
            self._apply(reply, final=True)
        except ipc.IpcError as e:
            log.debug("stream %s: ingest stop: %s", self.session.stream_id, e)
        self._final = IngestState.STOPPED.value if not IngestState(self.stats().state).is_final else None
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def detach(self) -> None:
        """The stream is closing: stop polling (its encoder stops the ingest on `enc.close`)."""
        if not self._stopped.is_set():
            self._stopped.set()
            if not IngestState(self.stats().state).is_final:
                self._final = IngestState.STOPPED.value

    # -- polling ------------------------------------------------------------------------------
    def _apply(self, reply: ipc.IngestPoll, final: bool = False) -> None:
        if not reply.active:
            return
        with self._lock:
            if final or not self._stopped.is_set():  # a poll answered before the stop is older
                self._current = dict(reply.stats)
        self.session.took_remote(reply)  # deltas: each is drained once by the encoder

    def _run(self) -> None:
        while not self._stopped.wait(self.interval_s):
            try:
                reply, _ = self._client().call("enc.poll", ipc.StreamRef(stream_id=self.session.stream_id),
                                               timeout=10, connect_wait=0.2)
            except ipc.IpcError:
                continue  # the encoder is down: stats() says recovering until it resumes
            self._apply(reply)
