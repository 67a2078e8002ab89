"""The encode scheduler's rules without a model: fair shedding under overload (a deliberately
slow fake encode), one frame per stream at a time, and the FIFO model lock with hand-offs."""

from __future__ import annotations

import threading
import time

import numpy as np

from streamvqa.engine.encode_scheduler import DROP_OVERLOAD, EncodeScheduler, SchedulerConfig
from streamvqa.engine.model_lock import ModelLock

IMAGE = np.zeros((4, 4, 3), np.uint8)


class SlowSession:
    """A session whose encode blocks until `gate` opens (the device is busy)."""

    def __init__(self, stream_id: str, log: list, gate: threading.Event | None = None) -> None:
        self.stream_id = stream_id
        self.log = log
        self.gate = gate

    def push_frame(self, image, t: float) -> None:
        if self.gate is not None:
            assert self.gate.wait(30)
        self.log.append((self.stream_id, t))


class Drops:
    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def on_frames_dropped(self, reason: str, n: int) -> None:
        self.seen[reason] = self.seen.get(reason, 0) + n


def _wait_for(cond, limit: int = 2000) -> None:
    for _ in range(limit):  # bounded
        if cond():
            return
        time.sleep(0.005)
    raise AssertionError("condition not reached")


def test_overload_sheds_the_streams_furthest_behind_first():
    drops = Drops()
    sched = EncodeScheduler(ModelLock(), SchedulerConfig(max_batch=1, max_lag_s=2.0), [drops])
    log: list = []
    gate = threading.Event()
    results: dict[str, bool] = {}
    now = time.monotonic()

    def push(session, arrival):
        results[session.stream_id] = sched.encode(session, IMAGE, 0.0, arrival)

    busy = threading.Thread(target=push, args=(SlowSession("busy", log, gate), now))
    busy.start()
    _wait_for(lambda: sched._active == 1)
    # waiting while the device is busy: a (5 s behind), d (3 s), b (1 s), c (0.5 s)
    behind = {"b": now - 1.0, "c": now - 0.5, "a": now - 5.0, "d": now - 3.0}
    threads = [threading.Thread(target=push, args=(SlowSession(s, log), arr)) for s, arr in behind.items()]
    for t in threads:
        t.start()
    _wait_for(lambda: len(sched._waiting) == 4)
    gate.set()
    for t in [busy, *threads]:
        t.join()
    # the two streams past the bound lose their frame, furthest behind first; the others are
    # encoded oldest first; the last waiter is never shed (nobody else is waiting: no overload)
    assert results == {"busy": True, "a": False, "d": False, "b": True, "c": True}
    assert [s for s, _ in log] == ["busy", "b", "c"]
    assert sched.stats.frames_dropped == {DROP_OVERLOAD: 2}
    assert drops.seen == {DROP_OVERLOAD: 2}


def test_no_shedding_when_the_rule_is_none_or_nothing_waits():
    sched = EncodeScheduler(ModelLock(), SchedulerConfig(max_batch=1, max_lag_s=0.5, shed="none"))
    log: list = []
    gate = threading.Event()
    now = time.monotonic()
    threads = [threading.Thread(target=sched.encode, args=(SlowSession("x", log, gate), IMAGE, 0.0, now))]
    threads[0].start()
    _wait_for(lambda: sched._active == 1)
    threads += [threading.Thread(target=sched.encode, args=(SlowSession(s, log), IMAGE, 0.0, now - 9))
                for s in ("y", "z")]
    for t in threads[1:]:
        t.start()
    _wait_for(lambda: len(sched._waiting) == 2)
    gate.set()
    for t in threads:
        t.join()
    assert sorted(s for s, _ in log) == ["x", "y", "z"]
    assert sched.stats.frames_dropped == {}
    # a stale frame with nothing else waiting is encoded (the device is free for it)
    sched = EncodeScheduler(ModelLock(), SchedulerConfig(max_batch=1, max_lag_s=0.5))
    assert sched.encode(SlowSession("w", log), IMAGE, 1.0, time.monotonic() - 60)


def test_one_frame_per_stream_at_a_time_in_order():
    """Two threads pushing one stream's frames: never two in flight, each encode in full."""
    sched = EncodeScheduler(ModelLock(), SchedulerConfig(max_batch=4))
    inside = []
    lock = threading.Lock()
    log: list = []

    class Probe(SlowSession):
        def push_frame(self, image, t):
            with lock:
                inside.append(self.stream_id)
                assert inside.count(self.stream_id) == 1
            time.sleep(0.001)
            with lock:
                inside.remove(self.stream_id)
            super().push_frame(image, t)

    session = Probe("s", log)
    threads = [threading.Thread(target=lambda k=k: [sched.encode(session, IMAGE, float(k * 10 + i)) for i in range(10)])
               for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(log) == 20
    for k in range(2):  # each feeding thread's frames in its order
        mine = [t for _, t in log if k * 10 <= t < k * 10 + 10]
        assert mine == sorted(mine)


def test_model_lock_is_first_come_first_served():
    lock = ModelLock()
    order: list[int] = []
    lock.acquire()
    threads = []
    for k in range(4):
        t = threading.Thread(target=lambda k=k: (lock.acquire(), order.append(k), lock.release()))
        t.start()
        threads.append(t)
        _wait_for(lambda k=k: len(lock._queue) == k + 1)
    lock.release()
    for t in threads:
        t.join()
    assert order == [0, 1, 2, 3]


def test_model_lock_promised_turns_go_before_queued_waiters():
    """A batch's encodes commit before a question queued meanwhile sees their caches."""
    lock = ModelLock()
    order: list[str] = []
    lock.acquire()
    question = threading.Thread(target=lambda: (lock.acquire(), order.append("question"), lock.release()))
    question.start()
    _wait_for(lambda: len(lock._queue) == 1)
    lock.expect_front(1)
    lock.release()
    time.sleep(0.05)  # the question may not take the promised turn
    assert order == []
    assert lock.acquire(front=True)
    order.append("commit")
    lock.release()
    question.join()
    assert order == ["commit", "question"]
    assert not lock.locked()


def test_server_settings_configure_the_scheduler():
    from streamvqa.engine import EngineConfig
    from streamvqa.server.settings import ServerSettings

    s = ServerSettings.from_env({"STREAMVQA_ENCODE_BATCH": "3", "STREAMVQA_ENCODE_SHED": "none",
                                 "STREAMVQA_ENCODE_BATCH_WAIT_S": "0.05"})
    cfg = EngineConfig(encode=s.encode_config())
    assert cfg.encode == SchedulerConfig(max_batch=3, max_tokens=8192, wait_s=0.05, max_lag_s=10.0, shed="none")
    for bad in ({"STREAMVQA_ENCODE_BATCH": "0"}, {"STREAMVQA_ENCODE_SHED": "random"}):
        try:
            ServerSettings.from_env(bad)
        except ValueError as e:
            assert "encode_" in str(e)
        else:
            raise AssertionError(f"{bad} accepted")
