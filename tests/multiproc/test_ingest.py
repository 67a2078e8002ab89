"""URL ingest runs in the encoder worker: frames never cross a socket, the server sees the
ingest's state and counters by polling, errors keep their codes, and a killed encoder's stream
resumes its ingest after the last acknowledged block."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from streamvqa.engine import Engine, EngineConfig
from streamvqa.workers.ingest import IngestConfig, IngestWorker
from tests.ingest.media import write_index_mp4
from tests.multiproc.conftest import TINY, wait_until


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_index_mp4(tmp_path_factory.mktemp("mp_ingest") / "clip.mp4", seconds=4.0, fps=10, width=96,
                           height=64)


def _ingest(session, url: str, **kw):
    return session.remote_ingest(IngestConfig(url=url, fps=2, **kw), session.stream_id).start()


def test_file_ingested_by_the_encoder_equals_embedded(durable_cluster, clip):
    engine = durable_cluster
    emb_engine = Engine(EngineConfig(model=TINY, threads=1))
    emb = emb_engine.open_stream("ie", "rekv", {})
    worker = IngestWorker(IngestConfig(url=clip.as_uri(), fps=2), lambda f: emb.push_frame(f.image, f.t)).start()
    session = engine.open_stream("ie", "rekv", {})
    before = engine.supervisor.workers["encoder"].client  # frames must not be sent by the server
    ingest = _ingest(session, clip.as_uri())
    try:
        assert worker.wait(60) and ingest.wait(60)
        assert ingest.state.value == "ended" and worker.state.value == "ended"
        a, b = worker.stats(), ingest.stats()
        assert (b.frames_decoded, b.frames_sampled, b.frames_delivered) == \
            (a.frames_decoded, a.frames_sampled, a.frames_delivered)
        assert wait_until(lambda: session.stats().frames_received == a.frames_delivered, 10)
        s, e = session.stats(), emb.stats()
        assert (s.units_encoded, s.frames_encoded, s.last_frame_t) == (e.units_encoded, e.frames_encoded,
                                                                       e.last_frame_t)
        assert session.acked == e.units_encoded
        q = "what is shown?"
        assert session.answer(q, max_tokens=10).token_ids == emb.answer(q, max_tokens=10).token_ids
        assert before is engine.supervisor.workers["encoder"].client
    finally:
        ingest.stop()
        worker.stop()
        engine.close_stream("ie")
        emb_engine.close_stream("ie")
    assert ingest.state.value == "ended"  # a final state is kept by stop(), as IngestWorker does


def test_ingest_errors_flow_back(durable_cluster, tmp_path):
    session = durable_cluster.open_stream("ierr", "rekv", {})
    ingest = _ingest(session, (tmp_path / "missing.mp4").as_uri(), max_retries=0)
    try:
        assert ingest.wait(60)
        s = ingest.stats()
        assert s.state == "failed" and s.last_error and s.last_error["code"] == "source_unreachable"
        assert ingest.last_error is not None and ingest.last_error.code == "source_unreachable"
    finally:
        ingest.stop()
        durable_cluster.close_stream("ierr")


def test_ingest_resumes_after_encoder_kill(durable_cluster, clip):
    """Paced (realtime) so the kill lands mid-file; after the restart the file is seeked to the
    last stored block and frames up to it are skipped: every block index once, times increasing."""
    engine = durable_cluster
    session = engine.open_stream("ik", "rekv", {})
    ingest = _ingest(session, clip.as_uri(), realtime=True)
    try:
        assert wait_until(lambda: session.acked >= 2, 60)
        enc = engine.supervisor.workers["encoder"]
        old_pid = enc.pid
        os.kill(old_pid, signal.SIGKILL)
        assert wait_until(lambda: session.resumes >= 1 and enc.pid != old_pid, 240)
        assert ingest.wait(120) and ingest.state.value == "ended", ingest.stats()
        idx = engine.store.index("ik")
        assert idx.indices == list(range(len(idx.indices)))
        starts = [t[0] for t in idx.times]
        assert starts == sorted(starts) and len(set(starts)) == len(starts)
        assert idx.times[-1][1] >= 3.0  # the end of the clip was ingested after the restart
        assert ingest.stats().reconnects >= 1
        assert session.answer("what is shown?", max_tokens=4).token_ids
    finally:
        ingest.stop()
        engine.close_stream("ik")


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    return write_index_mp4(tmp_path_factory.mktemp("mp_ingest_long") / "long.mp4", seconds=8.0, fps=10, width=96,
                           height=64)


def test_paced_file_resumes_at_the_acknowledged_block_not_its_start(durable_cluster, long_clip):
    """Issue 17 item 6: after an encoder kill a paced file is seeked to the last acknowledged
    block (not replayed from its start at real time); the stream shows `recovering` meanwhile,
    and its time base gets a segment where the restarted ingest took over."""
    engine = durable_cluster
    session = engine.open_stream("ir", "rekv", {})
    ingest = _ingest(session, long_clip.as_uri(), realtime=True)
    try:
        assert wait_until(lambda: session.acked >= 2 and engine.store.index("ir").times[-1][1] >= 1.5, 60)
        enc = engine.supervisor.workers["encoder"]
        old_pid = enc.pid
        os.kill(old_pid, signal.SIGKILL)
        assert wait_until(lambda: ingest.stats().state == "recovering", 30), ingest.stats()
        decoded_before = ingest.stats().frames_decoded  # the dead ingest's last polled count
        assert wait_until(lambda: session.resumes >= 1 and enc.pid != old_pid, 240)
        assert ingest.wait(120) and ingest.state.value == "ended", ingest.stats()
        s = ingest.stats()
        # at least the first second (10 frames, up to the keyframe before the resume point) was not decoded again
        assert s.frames_decoded - decoded_before <= 80 - 10, (decoded_before, s)
        idx = engine.store.index("ir")
        assert idx.indices == list(range(len(idx.indices)))
        starts = [t[0] for t in idx.times]
        assert starts == sorted(starts) and len(set(starts)) == len(starts)
        assert idx.times[-1][1] >= 7.0
        segs = s.time_base["segments"]
        assert segs[0]["t"] == 0.0 and len(segs) >= 2 and segs[-1]["t"] >= 1.0, s.time_base
        assert all(seg["source_pts"] == pytest.approx(seg["t"]) for seg in segs)  # a file keeps its own times
    finally:
        ingest.stop()
        engine.close_stream("ir")
