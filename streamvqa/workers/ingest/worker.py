"""One ingest worker per stream: open, decode, sample, deliver, reconnect — in background threads."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import av

from .config import IngestConfig
from .delivery import FrameDelivery, Sink
from .errors import IngestError
from .pipeline import FramePipeline
from .sampler import RgbConverter
from .source import OpenedSource, StreamInterrupted, open_source, read_frames
from .stats import IngestCounters, IngestState, IngestStats
from .urls import SourceKind

log = logging.getLogger(__name__)

#: Errors that a reconnect cannot fix: fail at once instead of retrying.
_FINAL_CODES = {"unsupported_scheme", "unsupported_codec", "no_video_stream", "resolution_too_large"}


@dataclass(frozen=True)
class ProbeResult:
    """What a synchronous probe learned about a source."""

    url: str
    kind: str
    codec: str
    width: int
    height: int
    first_frame_t: float


def probe_source(config: IngestConfig) -> ProbeResult:
    """Open the source and decode its first frame, synchronously (for ``?probe=true``).

    Bounded by ``open_timeout_s + read_timeout_s``. Raises :class:`IngestError`.
    """
    opened = open_source(config)
    deadline = time.monotonic() + config.open_timeout_s + config.read_timeout_s
    try:
        for frame in read_frames(opened, should_stop=lambda: time.monotonic() > deadline):
            if frame.width > config.max_decode_width or frame.height > config.max_decode_height:
                raise IngestError(
                    "resolution_too_large",
                    f"{config.url}: {frame.width}x{frame.height} exceeds "
                    f"{config.max_decode_width}x{config.max_decode_height}",
                )
            return ProbeResult(
                url=config.url,
                kind=opened.source.kind.value,
                codec=opened.codec_name,
                width=frame.width,
                height=frame.height,
                first_frame_t=float(frame.time or 0.0),
            )
    except StreamInterrupted as e:
        code = "source_unreachable" if opened.source.kind.is_network else "decode_error"
        raise IngestError(code, str(e)) from e
    finally:
        opened.close()
    if time.monotonic() > deadline:
        raise IngestError("source_unreachable", f"{config.url}: no frame within the probe deadline")
    raise IngestError("decode_error", f"{config.url}: the source ended before any frame decoded")


class IngestWorker:
    """Ingests one PyAV source (RTSP, HTTP(S), file) into ``sink``.

    Two threads: the *decode* thread opens the source, decodes, samples at ``config.fps`` and
    queues frames; the *delivery* thread calls ``sink`` (usually the encoder). A slow sink never
    blocks decoding: when ``config.queue_size`` frames are waiting, the oldest is dropped
    (reason ``encoder_behind``).

    Network sources that drop are reopened with exponential backoff; after ``max_retries``
    consecutive failed attempts the worker fails with ``retries_exhausted``. A file or HTTP
    source that reaches its end ends the worker (state ``ended``) once queued frames are
    delivered. RTSP sources are live: their end counts as a drop.

    ``resume_after`` (stream seconds) continues a stream an earlier ingest already took up to
    that time (the encoder restarted): a finite source (file, HTTP with a duration) is seeked
    there and keeps its own times, frames up to it are skipped without pacing; a live source
    continues one sampling interval after it. The state is ``recovering`` until the first new
    frame is decoded.

    Usage::

        worker = IngestWorker(IngestConfig(url="rtsp://cam/1", fps=1), encoder.push)
        worker.start()
        ...
        worker.stats().to_dict()
        worker.stop()
    """

    def __init__(self, config: IngestConfig, sink: Sink, name: str = "ingest",
                 resume_after: float | None = None) -> None:
        self.config = config
        self.name = name
        self._source = config.source
        self._counters = IngestCounters()
        self._stop = threading.Event()
        self._delivery = FrameDelivery(sink, config.queue_size, self._counters, name=name)
        self._pipeline = FramePipeline(
            config.fps,
            RgbConverter(
                config.max_width, config.max_height, config.max_decode_width, config.max_decode_height
            ),
            self._delivery,
            self._counters,
            clock="live" if self._source.kind is SourceKind.RTSP else "paced" if config.realtime else None,
        )
        self._thread = threading.Thread(target=self._run, name=f"{name}-decode", daemon=True)
        self._history: list[str] = []
        self._resume_after: float | None = None  # source pts to skip up to after an HTTP resume
        self._history_lock = threading.Lock()
        self._resume_at = resume_after  # stream time an earlier ingest reached (encoder restart)
        self._frames: Iterator[av.VideoFrame] | None = None  # frames decoding continues with
        self._record(IngestState.CONNECTING)
        if resume_after is not None:
            self._set_state(IngestState.RECOVERING)

    # -- public API ---------------------------------------------------------------------------

    def start(self) -> IngestWorker:
        """Start the background threads (returns self)."""
        self._delivery.start()
        self._thread.start()
        return self

    def probe(self) -> ProbeResult:
        """Synchronous open + first frame of this worker's source; raises :class:`IngestError`."""
        return probe_source(self.config)

    @property
    def state(self) -> IngestState:
        return self._counters.state

    @property
    def last_error(self) -> IngestError | None:
        return self._counters.last_error

    @property
    def state_history(self) -> list[str]:
        """Every state entered so far, in order (consecutive repeats collapsed)."""
        with self._history_lock:
            return list(self._history)

    def stats(self) -> IngestStats:
        """A consistent snapshot of state, counters, lag and last error."""
        return self._counters.snapshot()

    @property
    def frames_decoded(self) -> int:
        return self._counters.frames_decoded

    @property
    def frames_sampled(self) -> int:
        return self._counters.frames_sampled

    @property
    def frames_delivered(self) -> int:
        return self._counters.frames_delivered

    @property
    def frames_dropped(self) -> dict[str, int]:
        return self.stats().frames_dropped

    @property
    def reconnects(self) -> int:
        return self._counters.reconnects

    @property
    def encode_lag_s(self) -> float:
        return self.stats().encode_lag_s

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker reaches a final state; True if it did within ``timeout``."""
        if self._thread.ident is None:  # never started
            return self.state.is_final
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop decoding and delivery; queued frames are discarded. True if both threads exited.

        Bounded: a decode thread blocked inside FFmpeg returns within ``read_timeout_s``; the
        default ``timeout`` is ``read_timeout_s + 2`` seconds.
        """
        if timeout is None:
            timeout = self.config.read_timeout_s + 2.0
        deadline = time.monotonic() + timeout
        self._stop.set()
        self._set_state(IngestState.STOPPED)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        delivered_ok = self._delivery.close(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive() and delivered_ok

    # -- decode thread ------------------------------------------------------------------------

    def _record(self, state: IngestState) -> None:
        with self._history_lock:
            if not self._history or self._history[-1] != state.value:
                self._history.append(state.value)

    def _set_state(self, state: IngestState, error: IngestError | None = None) -> None:
        if self._counters.state.is_final:
            return
        self._counters.set_state(state, error)
        self._record(self._counters.state)
        if error is not None:
            log.warning("ingest %s %s: %s", self.name, state.value, error)

    def _fail(self, error: IngestError) -> None:
        self._set_state(IngestState.FAILED, error)

    def _run(self) -> None:
        try:
            self._run_stream()
        except Exception as e:  # a bug must not leave the stream "running" forever
            log.exception("ingest %s crashed", self.name)
            self._fail(IngestError("decode_error", f"internal error: {type(e).__name__}: {e}"))
        finally:
            if not self._stop.is_set():  # ended/failed: frames were drained; release the consumer
                self._delivery.close(timeout=1.0)

    def _run_stream(self) -> None:
        cfg, kind = self.config, self._source.kind
        try:
            opened: OpenedSource | None = open_source(cfg)
            if self._resume_at is not None:
                opened = self._recover(opened, self._resume_at)
        except IngestError as e:
            self._fail(e)
            return
        failed_attempts = 0
        while opened is not None:
            if self._stop.is_set():
                opened.close()
                return
            outcome, error, got_frames = self._consume(opened)
            opened.close()
            opened = None
            if self._stop.is_set():
                return
            if outcome == "fatal":
                assert error is not None
                self._fail(error)
                return
            if outcome == "ended" and kind is not SourceKind.RTSP:
                self._delivery.drain(should_stop=self._stop.is_set)
                self._set_state(IngestState.ENDED)
                return
            if kind is SourceKind.FILE:  # a damaged file: keep what was delivered, then fail
                self._delivery.drain(should_stop=self._stop.is_set)
                self._fail(IngestError("decode_error", str(error)))
                return
            if got_frames:
                failed_attempts = 0
            opened, failed_attempts = self._reconnect(failed_attempts, error)

    def _consume(self, opened: OpenedSource) -> tuple[str, IngestError | StreamInterrupted | None, bool]:
        """Decode until end/drop/stop. Returns (outcome, error, whether any frame decoded)."""
        pace = self.config.realtime and self._source.kind is not SourceKind.RTSP
        wall_zero: float | None = None
        got = False
        rate = opened.stream.average_rate or opened.stream.guessed_rate
        if rate and rate > 0:
            self._pipeline.frame_step = 1 / float(rate)
        resume_after, self._resume_after = self._resume_after, None
        try:
            frames, self._frames = self._frames, None  # left by a resume's seek (_recover)
            if frames is None:
                frames = read_frames(opened, self._stop.is_set, self._counters.decode_error)
            for vframe in frames:
                if resume_after is not None:
                    if vframe.time is not None and vframe.time <= resume_after + 1e-6:
                        continue  # already ingested before the drop
                    resume_after = None
                self._pipeline.push(vframe)
                if not got:  # frames flow: (re)connected for real
                    self._set_state(IngestState.RUNNING)
                got = True
                if pace:
                    t = self._pipeline.timeline.last_t or 0.0
                    if wall_zero is None:
                        wall_zero = time.monotonic() - t
                    delay = wall_zero + t - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        break
        except StreamInterrupted as e:
            return "interrupted", e, got
        except IngestError as e:
            return "fatal", e, got
        return "ended", None, got

    def _reconnect(
        self, failed_attempts: int, cause: BaseException | None
    ) -> tuple[OpenedSource | None, int]:
        """Reopen the source with exponential backoff. Returns (opened or None, failed attempts)."""
        cfg = self.config
        self._set_state(IngestState.RECONNECTING)
        log.info("ingest %s: source dropped (%s), reconnecting", self.name, cause or "end of stream")
        gap_start = time.monotonic()
        last_t = self._pipeline.timeline.last_t
        last_error: BaseException | None = cause
        while True:
            if failed_attempts >= cfg.max_retries:
                self._fail(
                    IngestError(
                        "retries_exhausted",
                        f"{cfg.url}: gave up after {failed_attempts} reconnect attempts; "
                        f"last error: {last_error or 'end of stream'}",
                    )
                )
                return None, failed_attempts
            if self._stop.wait(cfg.backoff_s(failed_attempts + 1)):
                return None, failed_attempts
            try:
                opened = open_source(cfg)
            except IngestError as e:
                if e.code in _FINAL_CODES:
                    self._fail(e)
                    return None, failed_attempts
                failed_attempts += 1
                last_error = e
                continue
            self._counters.reconnected()
            if not self._resume(opened) and last_t is not None:
                self._pipeline.new_segment(last_t + (time.monotonic() - gap_start))
            # a reconnect only counts as a success once frames flow again (see _run_stream)
            return opened, failed_attempts + 1

    def _recover(self, opened: OpenedSource, after: float) -> OpenedSource:
        """Continue after stream time ``after`` (see the class doc). Returns the source to decode."""
        if not self._finite(opened):  # live: continue after it, as after a reconnect
            self._pipeline.new_segment(after + 1.0 / self.config.fps)
            return opened
        try:
            first = self._peek(opened)
            if first is None or first.time is None:  # no pts to seek by: all of it again, after `after`
                self._pipeline.new_segment(after + 1.0 / self.config.fps)
                return self._reopen(opened)
            start = float(first.time)
            self._pipeline.timeline.anchor_at(start)  # stream time stays the source's time since its start
            self._pipeline.sampler.accept(after)  # the next frame kept is the one an undisturbed run keeps
            self._resume_after = target = start + after
            for back in (0.0, 1.0, 4.0, 16.0, 64.0):  # seeking (MPEG-TS) may land after the target
                if not self._seek(opened, max(start, target - back)):
                    break
                landed = self._peek(opened)
                if landed is not None and landed.time is not None and landed.time <= target + 1e-6:
                    return opened  # decoding continues right after this frame (also one to skip)
        except StreamInterrupted as e:
            opened.close()
            raise IngestError("decode_error" if self._source.kind is SourceKind.FILE else "source_unreachable",
                              str(e)) from e
        except IngestError:
            opened.close()
            raise
        log.info("ingest %s: cannot seek to %.3f s; decoding from the start, skipping up to it", self.name, target)
        return self._reopen(opened)  # frames up to the target are skipped, unpaced (_consume)

    def _reopen(self, opened: OpenedSource) -> OpenedSource:
        self._frames = None
        opened.close()
        return open_source(self.config)

    def _peek(self, opened: OpenedSource) -> av.VideoFrame | None:
        """The next decoded frame; later ones come from the same iterator in :meth:`_consume`."""
        self._frames = read_frames(opened, self._stop.is_set, self._counters.decode_error)
        return next(self._frames, None)

    def _seek(self, opened: OpenedSource, pts_s: float) -> bool:
        stream = opened.stream
        try:
            opened.container.seek(int(pts_s / stream.time_base), stream=stream, backward=True)
            return True
        except Exception as e:  # not seekable after all
            log.info("ingest %s: seek to %.3f s failed: %s", self.name, pts_s, e)
            return False

    def _finite(self, opened: OpenedSource) -> bool:
        kind = self._source.kind
        return kind is SourceKind.FILE or (kind is SourceKind.HTTP and bool(opened.container.duration))

    def _resume(self, opened: OpenedSource) -> bool:
        """After an HTTP drop on a seekable (finite) source, seek back to where decoding stopped.

        Frames already ingested are then skipped, so a file served over HTTP is ingested exactly
        once across drops and its timestamps stay the source's own. Live/unseekable sources (and
        RTSP) return False and continue on a new timeline segment instead.
        """
        last_pts = self._pipeline.timeline.last_pts
        if self._source.kind is not SourceKind.HTTP or last_pts is None or not opened.container.duration:
            return False
        stream = opened.stream
        try:
            opened.container.seek(int(last_pts / stream.time_base), stream=stream, backward=True)
        except Exception as e:  # not seekable after all: fall back to a new segment
            log.info(
                "ingest %s: cannot resume at %.3f s (%s); restarting the timeline", self.name, last_pts, e
            )
            return False
        self._resume_after = last_pts
        self._pipeline.reopened()
        return True
