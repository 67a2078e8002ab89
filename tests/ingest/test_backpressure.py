"""A slow sink never blocks decoding: the oldest queued frames are dropped, the newest kept."""

from __future__ import annotations

from pathlib import Path

from streamvqa.workers.ingest import Frame, IngestConfig, IngestState, IngestWorker
from streamvqa.workers.ingest.delivery import FrameDelivery
from streamvqa.workers.ingest.stats import IngestCounters

from .helpers import CollectingSink, wait_until
from .media import read_index


def test_slow_sink_drops_oldest_keeps_newest(h264_mp4: Path) -> None:
    sink = CollectingSink(delay_s=0.3)
    worker = IngestWorker(IngestConfig(url=str(h264_mp4), fps=25.0, queue_size=2), sink).start()
    try:
        # while the sink is behind, the lag is visible
        assert wait_until(
            lambda: worker.stats().frames_decoded == 250 and worker.stats().encode_lag_s > 0.0,
            timeout=60,
            interval=0.01,
        ), worker.stats()
        assert worker.wait(timeout=60)
    finally:
        worker.stop()
    s = worker.stats()
    assert worker.state is IngestState.ENDED
    assert s.frames_decoded == s.frames_sampled == 250
    assert s.frames_dropped.get("encoder_behind", 0) > 0
    assert s.frames_delivered + s.frames_dropped["encoder_behind"] == s.frames_sampled
    frames = sink.snapshot()
    assert len(frames) == s.frames_delivered < 250
    # the newest decoded frame was delivered last; lag is gone once the queue drained
    assert read_index(frames[-1].image) == 249
    assert frames[-1].t == s.last_decoded_t == s.last_delivered_t
    assert s.encode_lag_s == 0.0
    ts = [f.t for f in frames]
    assert ts == sorted(ts)


def test_delivery_queue_policy() -> None:
    """Unit view of the queue: full queue -> oldest dropped and counted, order kept."""
    import threading

    gate = threading.Event()
    got: list[int] = []

    def sink(frame: Frame) -> None:
        gate.wait(10)
        got.append(frame.index)

    counters = IngestCounters()
    d = FrameDelivery(sink, queue_size=3, counters=counters).start()
    try:
        import numpy as np

        img = np.zeros((2, 2, 3), np.uint8)
        d.submit(Frame(0.0, img, 0))
        assert wait_until(lambda: d.queued == 0, timeout=5)  # frame 0 is inside the sink, blocked
        for i in range(1, 8):
            d.submit(Frame(float(i), img, i))
        assert d.queued == 3
        gate.set()
        assert d.drain(timeout=10)
    finally:
        d.close()
    assert got == [0, 5, 6, 7]
    s = counters.snapshot()
    assert s.frames_dropped == {"encoder_behind": 4} and s.frames_delivered == 4
