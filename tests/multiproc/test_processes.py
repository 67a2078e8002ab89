"""The multi-process topology end to end: answers equal embedded mode; kill -9 of the answer
worker mid-answer, of the encoder mid-stream and of the store; /dev/shm checked after."""

from __future__ import annotations

import signal
import threading

import pytest

from streamvqa.engine import Engine, EngineConfig
from streamvqa.engine.errors import EngineError
from streamvqa.proto import ApiError
from streamvqa.store import shm
from tests.multiproc.conftest import TINY, digest, frames, wait_until

QUESTIONS = ["what is shown?", "what colour is the object at the start?"]
CASES = [("rekv", {}), ("rekv", {"topk": 2, "n_local": 40})]  # second: retrieval + window rebuilds


@pytest.fixture(scope="module")
def embedded() -> Engine:
    return Engine(EngineConfig(model=TINY, threads=1))


def _read(engine, stream_id: str, indices: list[int]) -> dict[int, str]:
    from streamvqa.workers.multi.remote_store import RemoteStore

    reader = RemoteStore(engine.supervisor.workers["kvstore"].client, engine.store.fingerprint,
                         engine.config.shm_prefix)
    return {b.index: digest(b) for b in reader.get_many(stream_id, indices)}


@pytest.mark.parametrize("method, options", CASES)
def test_answers_equal_embedded(durable_cluster, embedded, method, options):
    sid = f"eq-{len(options)}"
    clip = frames(8, seed=1)
    emb = embedded.open_stream(sid, method, options)
    multi = durable_cluster.open_stream(sid, method, options)
    try:
        for i, f in enumerate(clip):
            emb.push_frame(f, i * 0.5)
            multi.push_frame(f, i * 0.5)
            if i == 3:  # mid-stream: the answer worker's replica is refreshed (reusing blocks) later
                assert multi.answer(QUESTIONS[0], max_tokens=8).token_ids == \
                    emb.answer(QUESTIONS[0], max_tokens=8).token_ids
        assert multi.acked == 8
        for q in QUESTIONS:
            a = emb.answer(q, max_tokens=12)
            b = multi.answer(q, max_tokens=12)
            assert b.token_ids == a.token_ids, q
            assert b.text == a.text
            assert b.evidence == a.evidence
        # the same blocks, byte for byte, whichever process encoded them
        emb_blocks = {b.index: digest(b) for b in emb.store.get_many(sid, list(range(8)))}
        assert _read(durable_cluster, sid, list(range(8))) == emb_blocks
    finally:
        embedded.close_stream(sid)
        durable_cluster.close_stream(sid)


def test_kill_answer_worker_mid_answer(durable_cluster):
    engine = durable_cluster
    session = engine.open_stream("ka", "rekv", {})
    try:
        for i, f in enumerate(frames(4, seed=2)):
            session.push_frame(f, float(i))
        before = session.answer("describe everything", max_tokens=24)
        restarts = engine.supervisor.workers["answer"].restarts
        outcome: dict = {}
        first_token = threading.Event()

        def ask() -> None:
            try:
                for _ev in session.events("describe everything in detail", max_tokens=512):
                    first_token.set()
                    outcome.setdefault("tokens", 0)
                    outcome["tokens"] += 1
                outcome["finished"] = True
            except ApiError as e:
                outcome["error"] = e
            finally:
                first_token.set()

        t = threading.Thread(target=ask)
        t.start()
        assert first_token.wait(60)
        engine.supervisor.kill("answer", signal.SIGKILL)
        t.join(60)
        assert not t.is_alive(), "the question hung after its worker died"
        assert "error" in outcome, outcome
        assert outcome["error"].code == "worker_unavailable" and outcome["error"].status == 503
        assert engine.supervisor.wait_up("answer", 240, after_restarts=restarts + 1)
        after = session.answer("describe everything", max_tokens=24)
        assert after.token_ids == before.token_ids
    finally:
        engine.close_stream("ka")


def test_kill_encoder_mid_stream_resumes(durable_cluster):
    engine = durable_cluster
    session = engine.open_stream("ke", "rekv", {"n_local": 40})
    clip = frames(12, seed=3)
    try:
        for i in range(5):
            session.push_frame(clip[i], float(i))
        acked = session.acked
        assert acked == 5
        kept = _read(engine, "ke", list(range(acked)))
        restarts = engine.supervisor.workers["encoder"].restarts
        engine.supervisor.kill("encoder", signal.SIGKILL)
        with pytest.raises(EngineError) as e:  # while it is down a frame is refused, not hung
            session.push_frame(clip[5], 5.0)
        assert e.value.code == "worker_unavailable"
        assert engine.supervisor.wait_up("encoder", 240, after_restarts=restarts + 1)
        for i in range(6, 12):
            session.push_frame(clip[i], float(i))
        assert session.resumes >= 1
        # resumed after the last acknowledged block: dense indices, earlier blocks untouched
        idx = engine.store.index("ke")
        assert idx.indices == list(range(acked + 6))
        now = _read(engine, "ke", idx.indices)
        assert {i: now[i] for i in range(acked)} == kept
        assert [round(t0, 3) for t0, _ in idx.times[acked:]] == [float(i) for i in range(6, 12)]
        ans = session.answer("what is shown?", max_tokens=8)
        assert ans.token_ids or ans.finish_reason == "stop"
    finally:
        engine.close_stream("ke")


def test_kill_store_keeps_acknowledged_blocks(durable_cluster):
    engine = durable_cluster
    session = engine.open_stream("ks", "rekv", {})
    clip = frames(10, seed=4)
    try:
        for i in range(6):
            session.push_frame(clip[i], float(i))
        acked = session.acked
        kept = _read(engine, "ks", list(range(acked)))
        answer_before = session.answer("what is shown?", max_tokens=10)
        sup = engine.supervisor
        restarts = sup.workers["kvstore"].restarts
        dead = sup.kill("kvstore", signal.SIGKILL)
        assert sup.wait_up("kvstore", 120, after_restarts=restarts + 1)
        # the janitor took the dead store's segments
        assert wait_until(lambda: not [n for n, pid in shm.list_segments(engine.config.shm_prefix) if pid == dead], 30)
        now = _read(engine, "ks", list(range(acked)))
        assert now == kept  # every acknowledged block readable and byte-identical (checksummed)
        for i in range(6, 10):  # the stream goes on
            session.push_frame(clip[i], float(i))
        assert engine.store.index("ks").indices == list(range(10))
        again = session.answer("what is shown?", max_tokens=10)
        assert again.token_ids and answer_before.token_ids  # both answered
    finally:
        engine.close_stream("ks")


def test_abandoned_question_is_cancelled(durable_cluster):
    """A caller that goes away (WebSocket closed) stops the answer worker's generation."""
    engine = durable_cluster
    session = engine.open_stream("kc", "rekv", {})
    try:
        for i, f in enumerate(frames(3, seed=9)):
            session.push_frame(f, float(i))
        before = engine.supervisor.workers["answer"].client.ping().info["cancelled"]
        it = session.events("describe everything in detail", max_tokens=512)
        assert next(it).index == 0
        it.close()  # abandon after the first token
        ping = engine.supervisor.workers["answer"].client.ping
        assert wait_until(lambda: ping().info["cancelled"] > before, 60)
        assert session.answer("what is shown?", max_tokens=4).token_ids  # the worker serves on
    finally:
        engine.close_stream("kc")


# methods whose state the store does not hold: answered by the encoder that owns the session
STATEFUL = [("streamkv", {}), ("infinipot-v", {"memory_tokens": 200}), ("livevlm", {"n_local": 40})]


@pytest.mark.parametrize("method, options", STATEFUL)
def test_stateful_methods_answer_on_the_encoder_equal_embedded(durable_cluster, embedded, method, options):
    sid = f"st-{method}"
    clip = frames(8, seed=2)
    emb = embedded.open_stream(sid, method, options)
    multi = durable_cluster.open_stream(sid, method, options)
    assert multi.answers_on_encoder
    before = durable_cluster.supervisor.workers["answer"].client.ping().info["replicas"]
    try:
        for i, f in enumerate(clip):
            emb.push_frame(f, i * 0.5)
            multi.push_frame(f, i * 0.5)
            if i == 3:
                assert multi.answer(QUESTIONS[0], max_tokens=8).token_ids == \
                    emb.answer(QUESTIONS[0], max_tokens=8).token_ids
        for q in QUESTIONS:
            a = emb.answer(q, max_tokens=12)
            b = multi.answer(q, max_tokens=12)
            assert b.token_ids == a.token_ids, q
            assert b.text == a.text
            assert b.evidence == a.evidence
        # the answer worker never built a replica for it
        assert durable_cluster.supervisor.workers["answer"].client.ping().info["replicas"] == before
    finally:
        embedded.close_stream(sid)
        durable_cluster.close_stream(sid)


def test_stateful_abandoned_question_is_cancelled_on_the_encoder(durable_cluster):
    engine = durable_cluster
    session = engine.open_stream("kce", "streamkv", {})
    try:
        for i, f in enumerate(frames(3, seed=9)):
            session.push_frame(f, float(i))
        ping = engine.supervisor.workers["encoder"].client.ping
        before = ping().info["cancelled"]
        it = session.events("describe everything in detail", max_tokens=512)
        assert next(it).index == 0
        it.close()
        assert wait_until(lambda: ping().info["cancelled"] > before, 60)
        assert session.answer("what is shown?", max_tokens=4).token_ids
    finally:
        engine.close_stream("kce")


def test_health_reports_workers(durable_cluster):
    h = durable_cluster.health()
    assert h["ok"] and set(h["workers"]) == {"kvstore", "encoder", "answer"}
    assert "disk" in h["tiers"]
