"""vLLM in the multi-process topology: the answer worker runs one vLLM process (real worker
processes, the real default model). Greedy answers equal the transformers engine's token for
token; a `kill -9` of the vLLM process under the answer worker is `503 worker_unavailable`
until the worker has restarted it, then answers come back; /metrics gathers its vLLM metrics."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamvqa.answering.vllm_process import vllm_python
from streamvqa.proto import ApiError
from streamvqa.store import shm
from streamvqa.workers.multi.config import MultiConfig
from tests.helpers import wait_until
from tests.multiproc.conftest import prefix, stop_cluster
from tests.vllm.conftest import START_TIMEOUT_S, needle_stream

pytestmark = pytest.mark.timeout(1800)
MAX_TOKENS = 6
HOST_BYTES = 4 << 20
CASES = {"full": None, "rekv": {"n_local": 48, "topk": 4}, "sliding-window": {"n_local": 48}}


def vllm_child(worker_pid: int) -> int | None:
    """The pid of the vLLM process the answer worker started (None while there is none)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        state = stat.rsplit(")", 1)[1].split()[0]
        if ppid == worker_pid and state != "Z" and b"streamvqa.answering.vllm_server" in cmd:
            return int(entry.name)
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if vllm_python() is None:
        pytest.skip("no .venv-vllm: run `bash tools/setup.sh --vllm` (tools/test.sh does)")
    # a small host tier: a stream's older blocks live on disk (the connector counts per tier)
    store = {"tiers": [{"kind": "host", "budget_bytes": HOST_BYTES, "shm_prefix": prefix("vl")},
                       {"kind": "disk", "path": str(tmp_path_factory.mktemp("kvdisk")), "budget_bytes": 1 << 30}]}
    config = MultiConfig(model="default", threads=1, run_dir=tempfile.mkdtemp(prefix="svq-"), store=store,
                            restart_backoff_s=0.2, start_timeout_s=START_TIMEOUT_S, answer_engine="vllm",
                            vllm={"max_num_seqs": 8, "max_model_len": 4096, "kv_cache_gib": 1,
                                  "start_timeout_s": START_TIMEOUT_S})
    from streamvqa.workers.multi.facade import MultiEngine

    assert not shm.list_segments(store["tiers"][0]["shm_prefix"])
    engine = MultiEngine(config)
    try:
        yield engine
    finally:
        stop_cluster(engine)


@pytest.fixture(scope="module")
def reference():
    """The transformers engine (this process), the reference answers come from."""
    from streamvqa.engine import Engine, EngineConfig
    from tests.engine.conftest import get_adapter

    engine = Engine(EngineConfig(), adapter=get_adapter("default"))
    yield engine
    engine.close()


def samples(text: str, name: str) -> dict[tuple, float]:
    """{sorted labels: value} of the samples named `name` in Prometheus text."""
    return {tuple(sorted(s.labels.items())): s.value for fam in text_string_to_metric_families(text)
            for s in fam.samples if s.name == name}


def _fed(engine, sid: str, method: str, options: dict | None, frames) -> object:
    s = engine.open_stream(sid, method, options or {})
    for image, t in frames:
        s.push_frame(image, t)
    return s


@pytest.mark.slow
@pytest.mark.parametrize("method", list(CASES))
def test_multi_vllm_answers_equal_transformers(cluster, reference, method: str) -> None:
    frames, questions = needle_stream(7101, minutes=0.25)
    sid = f"mx-{method}"
    multi = _fed(cluster, sid, method, CASES[method], frames)
    local = _fed(reference, sid, method, CASES[method], frames)
    try:
        assert not multi.answers_on_encoder  # answered by the answer worker, i.e. by its vLLM
        for q in questions[:2]:
            a = multi.answer(q["question"], max_tokens=MAX_TOKENS)
            b = local.answer(q["question"], max_tokens=MAX_TOKENS)
            assert a.token_ids == b.token_ids, (method, q["question"], a.text, b.text)
            assert a.evidence == b.evidence
        metrics = cluster.answer_metrics()["answer"]
        assert samples(metrics, "streamvqa_vllm_questions_total")[()] >= 2
        assert not samples(metrics, "streamvqa_vllm_fallbacks_total")  # none fell back to transformers
        # the server's /metrics (the collectors it registers): vLLM's families, labelled by worker
        fams = {f.name: f for c in cluster.collectors() for f in c.collect()}
        assert {s.labels["worker"] for s in fams["streamvqa_vllm_questions"].samples} == {"answer"}
        assert "vllm:num_requests_running" in fams
    finally:
        cluster.close_stream(sid)
        reference.close_stream(sid)


@pytest.mark.slow
def test_multi_questions_in_flight_together_equal_alone(cluster) -> None:
    """8 questions over 4 streams at once through the answer worker (its RPC threads and vLLM's
    batch) answer what each answers alone."""
    from concurrent.futures import ThreadPoolExecutor

    sessions, asked = [], []
    try:
        for k in range(4):
            frames, questions = needle_stream(7110 + k, minutes=0.15)
            sessions.append(_fed(cluster, f"mc-{k}", "rekv", CASES["rekv"], frames))
            asked += [(sessions[-1], questions[i % len(questions)]["question"]) for i in range(2)]
        alone = [s.answer(q, max_tokens=MAX_TOKENS).token_ids for s, q in asked]
        with ThreadPoolExecutor(len(asked)) as pool:
            together = list(pool.map(lambda a: a[0].answer(a[1], max_tokens=MAX_TOKENS).token_ids, asked))
        assert together == alone
    finally:
        for k in range(len(sessions)):
            cluster.close_stream(f"mc-{k}")


@pytest.mark.slow
def test_multi_kill_9_of_vllm_is_503_then_answers(cluster) -> None:
    frames, questions = needle_stream(7120, minutes=0.15)
    session = _fed(cluster, "mk", "rekv", CASES["rekv"], frames)
    try:
        q = questions[0]["question"]
        before = session.answer(q, max_tokens=MAX_TOKENS)
        worker = cluster.supervisor.workers["answer"]
        worker_pid, worker_restarts = worker.pid, worker.restarts
        victim = vllm_child(worker_pid)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        # the worker noticed (its vLLM supervisor reaped the process and started another)
        assert wait_until(lambda: vllm_child(worker_pid) not in (None, victim), 60, 0.2)
        with pytest.raises(ApiError) as err:
            session.answer(q, max_tokens=MAX_TOKENS)
        assert (err.value.code, err.value.status) == ("worker_unavailable", 503)

        def answered():
            try:
                return session.answer(q, max_tokens=MAX_TOKENS)
            except ApiError as e:
                assert e.code == "worker_unavailable", e
                return None

        after = wait_until(answered, START_TIMEOUT_S, 2.0)
        assert after is not None and after.token_ids == before.token_ids
        # the answer worker itself never died: only its vLLM process was restarted
        assert (worker.pid, worker.restarts) == (worker_pid, worker_restarts)
        assert samples(cluster.answer_metrics()["answer"], "streamvqa_vllm_restarts_total") == {(): 1.0}
    finally:
        cluster.close_stream("mk")


def _counts(cluster) -> dict[str, dict[tuple, float]]:
    text = cluster.answer_metrics()["answer"]
    return {name: samples(text, name) for name in (
        "streamvqa_vllm_connector_blocks_loaded_by_tier_total", "streamvqa_vllm_connector_tokens_loaded_by_tier_total",
        "streamvqa_vllm_connector_bytes_loaded_by_tier_total", "streamvqa_vllm_connector_prefix_hits_total",
        "streamvqa_vllm_connector_prefix_hit_tokens_total", "streamvqa_vllm_memory_exported_tokens_total",
        "streamvqa_vllm_memory_exported_bytes_total")}


def _delta(after: dict, before: dict, name: str) -> dict[str, float]:
    """Per tier (or "" unlabelled): what the counter `name` grew by (zero growth left out)."""
    out = {}
    for labels, v in after[name].items():
        d = v - before[name].get(labels, 0.0)
        if d:
            out[dict(labels).get("tier", "")] = d
    return out


@pytest.mark.slow
def test_connector_counts_per_tier_and_a_follow_up_is_a_prefix_hit(cluster) -> None:
    """The first question loads the sink and every retrieved block, counted under the tier the
    answer read it from (host or disk), bytes = tokens x the KV bytes of a token; the same question
    again is served from vLLM's prefix cache: at most the block holding the memory's end (shared
    with the question's ids) is loaded again."""
    frames, questions = needle_stream(7130, minutes=0.25)
    session = _fed(cluster, "mt", "full", None, frames)
    try:
        q = questions[0]["question"]
        m0 = _counts(cluster)
        first = session.answer(q, max_tokens=MAX_TOKENS)
        m1 = _counts(cluster)
        assert {"host", "disk"} <= set(first.tiers), first.tiers  # the stream outgrew the host tier
        assert _delta(m1, m0, "streamvqa_vllm_connector_blocks_loaded_by_tier_total") == {"sink": 1, **first.tiers}
        memory = _delta(m1, m0, "streamvqa_vllm_memory_exported_tokens_total")[""]
        tokens = _delta(m1, m0, "streamvqa_vllm_connector_tokens_loaded_by_tier_total")
        nbytes = _delta(m1, m0, "streamvqa_vllm_connector_bytes_loaded_by_tier_total")
        assert sum(tokens.values()) == memory  # nothing was in vLLM's cache yet
        assert not _delta(m1, m0, "streamvqa_vllm_connector_prefix_hit_tokens_total")
        # a token's K and V in every layer, as exported: the same for every tier
        per_token = _delta(m1, m0, "streamvqa_vllm_memory_exported_bytes_total")[""] / memory
        assert {t: nbytes[t] / tokens[t] for t in tokens} == dict.fromkeys(tokens, per_token)

        again = session.answer(q, max_tokens=MAX_TOKENS)
        m2 = _counts(cluster)
        assert again.token_ids == first.token_ids
        assert _delta(m2, m1, "streamvqa_vllm_memory_exported_tokens_total")[""] == memory
        reloaded = sum(_delta(m2, m1, "streamvqa_vllm_connector_tokens_loaded_by_tier_total").values())
        hit = _delta(m2, m1, "streamvqa_vllm_connector_prefix_hit_tokens_total").get("", 0)
        print(f"follow-up: {hit:.0f} of {memory:.0f} memory tokens from vLLM's prefix cache, {reloaded:.0f} loaded")
        assert hit + reloaded == memory and reloaded < 128  # vLLM's block size: at most the last block
        assert _delta(m2, m1, "streamvqa_vllm_connector_prefix_hits_total").get("", 0) == (1 if reloaded == 0 else 0)
        assert sum(_delta(m2, m1, "streamvqa_vllm_connector_bytes_loaded_by_tier_total").values()) == \
            reloaded * per_token
    finally:
        cluster.close_stream("mt")
