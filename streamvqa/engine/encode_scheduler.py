"""The encode scheduler of one device: frames of many streams, encoded in batches, shed fairly.

Each stream's frames reach `encode()` from that stream's own delivery thread, one at a time
and in order (so a stream's order is kept by construction). The scheduler:

- **admits** at most `max_batch` frames at once, oldest arrival first: the stream furthest
  behind is served first;
- **batches**: an admitted frame runs the session's ordinary encode code; its model calls
  (the vision tower in `unit_piece`, the decoder in `forward`) are handed to the batcher
  (`streamvqa/models/batching.py`). A batch is calls of one kind; it starts when every admitted encode is waiting on
  the model, when it holds `max_batch` calls or `max_tokens` decoder tokens, or when no encode
  has reached the model for `wait_s` (a straggler busy elsewhere does not hold the rest up). The vision calls run as one `unit_pieces` batch and the decoder
  calls as one ragged forward (`engine/batch_forward.py`), exact per stream;
- **sheds** load when the device cannot keep up: when an admission slot frees and the oldest
  waiting frame is older than `max_lag_s`, that frame (its stream is the one furthest behind)
  is dropped, and so on down the line until the oldest is within the bound. Shedding happens
  only under overload: more frames waiting than free admission slots (a lone late frame on an
  idle device is encoded). Dropped frames are
  counted by reason `encode_overload` (`vqa_frames_dropped_total{reason}`). A stream that falls
  behind loses its stale frames instead of holding every other stream back.

Questions share the device through the engine's FIFO model lock (`engine/model_lock.py`): the
batcher holds it for the batched call only, so a question waits for at most the turns queued
before it, and encoding gets its turn between two answer tokens.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from streamvqa.engine.batch_forward import ForwardRequest, batchable, forward_batch
from streamvqa.models import batching

DROP_OVERLOAD = "encode_overload"


class SchedulerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_batch: int = Field(8, ge=1, description="frames (streams) encoded together; 1: one at a time")
    max_tokens: int = Field(8192, ge=1, description="decoder tokens per batched forward")
    wait_s: float = Field(0.01, ge=0, description="how long a batch waits for encodes still on their way")
    max_lag_s: float | None = Field(10.0, gt=0, description="shed frames older than this; None: never shed")
    shed: Literal["furthest_behind", "none"] = "furthest_behind"


@dataclass
class _Waiter:
    arrival: float
    stream_id: str
    admitted: bool = False
    shed: bool = False


@dataclass
class _Call:
    kind: str  # "vision" | "forward"
    adapter: object
    args: tuple
    tokens: int = 0
    held: bool = False  # the caller held the model lock: it gets a promised turn back
    skipped: int = 0  # batches run without it
    done: bool = False
    result: object = None
    error: BaseException | None = None


class SchedulerStats:
    """Counters the scheduler keeps (read by metrics and the benchmark)."""

    def __init__(self) -> None:
        self.batches: dict[int, int] = {}  # decoder forwards by number of streams in them
        self.vision_batches: dict[int, int] = {}
        self.frames_encoded = 0
        self.frames_dropped: dict[str, int] = {}
        self.lags: list[float] = []  # seconds from arrival to encoded, per frame (bounded)

    def lag_quantile(self, q: float) -> float | None:
        if not self.lags:
            return None
        return float(np.quantile(np.array(self.lags), q))


class EncodeScheduler:
    def __init__(self, lock, config: SchedulerConfig | None = None, observers: list | None = None) -> None:
        self.config = config or SchedulerConfig()
        self.lock = lock  # the engine's model lock (a ModelLock: `owned()` tells if this thread holds it)
        self.observers = observers if observers is not None else []
        self.stats = SchedulerStats()
        self._cond = threading.Condition()
        self._waiting: list[_Waiter] = []  # frames not admitted yet
        self._inflight: dict[str, float] = {}  # stream -> arrival of the frame it is encoding
        self._active = 0
        self._calls: list[_Call] = []
        self._running = False
        self._last_event = time.monotonic()  # a call arrived or a batch ended: encodes are moving
        self._max_lags = 10_000

    # -- frames in ---------------------------------------------------------------------------
    def encode(self, session, image: np.ndarray, t: float, arrival: float | None = None) -> bool:
        """Encode one frame of `session` (blocking, the stream's own thread). Returns False when
        the frame was shed. `arrival`: `time.monotonic()` when the frame became available."""
        w = _Waiter(time.monotonic() if arrival is None else arrival, session.stream_id)
        if not self._admit(w):
            self._dropped(DROP_OVERLOAD, 1)
            return False
        try:
            with batching.using(self):
                session.push_frame(image, t)
        finally:
            with self._cond:
                self._active -= 1
                self._inflight.pop(w.stream_id, None)
                self._grant()
                self._cond.notify_all()
        lag = time.monotonic() - w.arrival
        with self._cond:
            self.stats.frames_encoded += 1
            self.stats.lags.append(lag)
            if len(self.stats.lags) > self._max_lags:
                del self.stats.lags[: len(self.stats.lags) // 2]
        for obs in self.observers:
            fn = getattr(obs, "on_frame_lag", None)
            if fn is not None:
                fn(lag)
        return True

    def _admit(self, w: _Waiter) -> bool:
        with self._cond:
            self._waiting.append(w)
            self._grant()
            while not (w.admitted or w.shed):
                self._cond.wait()
            return w.admitted

    def _grant(self) -> None:
        """Fill free admission slots, oldest frame first; shed the stale ones (cond held)."""
        c = self.config
        self._waiting.sort(key=lambda x: x.arrival)
        now = time.monotonic()
        changed = False
        for w in list(self._waiting):
            free = c.max_batch - self._active
            if free <= 0:
                break
            if w.stream_id in self._inflight:
                continue  # never two frames of one stream at once: its order is kept
            overloaded = len(self._waiting) > free  # more frames wait than the device can take now
            if c.shed != "none" and c.max_lag_s is not None and overloaded and now - w.arrival > c.max_lag_s:
                w.shed = True  # the furthest behind loses its frame first
            else:
                w.admitted = True
                self._active += 1
                self._inflight[w.stream_id] = w.arrival
            self._waiting.remove(w)
            changed = True
        if changed:
            self._cond.notify_all()

    def lag_now(self) -> float:
        """How far behind the furthest-behind stream is now (seconds since its oldest frame
        still waiting or encoding arrived)."""
        with self._cond:
            arrivals = [w.arrival for w in self._waiting] + list(self._inflight.values())
        return max(0.0, time.monotonic() - min(arrivals)) if arrivals else 0.0

    def _dropped(self, reason: str, n: int) -> None:
        with self._cond:
            self.stats.frames_dropped[reason] = self.stats.frames_dropped.get(reason, 0) + n
        for obs in self.observers:
            fn = getattr(obs, "on_frames_dropped", None)
            if fn is not None:
                fn(reason, n)

    # -- the batcher (models/batching.Batcher) ---------------------------------------------
    def vision(self, adapter, frames: list, t_start: float):
        return self._call(_Call("vision", adapter, (frames, t_start)))

    def forward(self, adapter, embeds, positions, cache, logits: str):
        req = ForwardRequest(embeds, positions, cache, logits, list(batching.open_captures()))
        return self._call(_Call("forward", adapter, (req,), tokens=req.n))

    def _call(self, call: _Call):
        held = call.held = self.lock.owned()
        if held:  # others encode (and questions run) while this call waits for its batch
            self.lock.release()
        try:
            with self._cond:
                self._calls.append(call)
                self._last_event = time.monotonic()
                self._cond.notify_all()
                while not call.done:
                    batch = self._ready()
                    if batch is None:
                        self._cond.wait(self._timeout())
                        continue
                    self._running = True
                    self._cond.release()
                    try:
                        self._run(batch)
                    finally:
                        self._cond.acquire()
                        self._running = False
                        self._last_event = time.monotonic()
                        for c in batch:
                            c.done = True
                        self._grant()
                        self._cond.notify_all()
        finally:
            if held:  # the turn the batch promised: commit before a question sees the cache
                self.lock.acquire(front=True)
        if call.error is not None:
            raise call.error
        return call.result

    def _ready(self) -> list[_Call] | None:
        """The calls to run now, or None to keep waiting (cond held)."""
        if self._running or not self._calls:
            return None
        c = self.config
        tokens = sum(x.tokens for x in self._calls)
        if (len(self._calls) >= self._active or len(self._calls) >= c.max_batch or tokens >= c.max_tokens
                or time.monotonic() - self._last_event >= c.wait_s):
            # one kind per batch, the most common (vision or decoder): streams that drifted a
            # phase apart fall back in step; a call passed over twice goes next
            kinds = [x.kind for x in self._calls]
            late = [x.kind for x in self._calls if x.skipped >= 2]
            kind = late[0] if late else max(("forward", "vision"), key=kinds.count)
            batch = [x for x in self._calls if x.kind == kind]
            self._calls = [x for x in self._calls if x.kind != kind]
            for x in self._calls:
                x.skipped += 1
            return batch
        return None

    def _timeout(self) -> float:
        return max(0.0005, self.config.wait_s - (time.monotonic() - self._last_event))

    def _run(self, batch: list[_Call]) -> None:
        """Run the calls: vision as one `unit_pieces` per adapter, decoder calls in forwards of
        at most `max_tokens` tokens. Under the model lock, with routing off (direct calls)."""
        with self.lock, batching.using(None), torch.inference_mode():
            groups: dict[tuple[str, int], list[_Call]] = {}
            for c in batch:
                groups.setdefault((c.kind, id(c.adapter)), []).append(c)
            for (kind, _), calls in groups.items():
                for chunk in self._chunks(kind, calls):
                    try:
                        adapter = chunk[0].adapter
                        if kind == "vision":
                            results = adapter.unit_pieces([c.args for c in chunk])
                            self._count(self.stats.vision_batches, len(chunk))
                        else:
                            results = forward_batch(adapter, [c.args[0] for c in chunk])
                            self._count(self.stats.batches, len(chunk))
                            for obs in self.observers:
                                fn = getattr(obs, "on_encode_batch", None)
                                if fn is not None:
                                    fn(len(chunk))
                        for c, r in zip(chunk, results, strict=True):
                            c.result = r
                    except BaseException as e:  # every caller of the chunk sees the failure
                        for c in chunk:
                            c.error = e
            self.lock.expect_front(sum(c.held for c in batch))

    def _chunks(self, kind: str, calls: list[_Call]) -> list[list[_Call]]:
        if kind == "vision":
            return [calls[i:i + self.config.max_batch] for i in range(0, len(calls), self.config.max_batch)]
        out: list[list[_Call]] = []
        cur: list[_Call] = []
        tokens = 0
        for c in calls:
            if not batchable(c.args[0].cache):
                out.append([c])  # a cache with sliding-window layers runs alone
                continue
            if cur and (tokens + c.tokens > self.config.max_tokens or len(cur) >= self.config.max_batch):
                out.append(cur)
                cur, tokens = [], 0
            cur.append(c)
            tokens += c.tokens
        if cur:
            out.append(cur)
        return out

    def _count(self, hist: dict[int, int], n: int) -> None:
        hist[n] = hist.get(n, 0) + 1
