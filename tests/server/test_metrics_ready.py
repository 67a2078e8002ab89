"""/metrics after a question has every metric; /ready reports degraded parts; multiprocess mode."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from streamvqa.server.metrics import METRIC_NAMES

from .conftest import wait_stream
from .doubles import EngineDouble

REPO = Path(__file__).resolve().parents[2]


def samples(text: str) -> dict[str, float]:
    """``{'name{labels}': value}`` for every sample line."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def has_metric(text: str, name: str) -> bool:
    return re.search(rf"^{re.escape(name)}(_bucket|_count|_sum)?[{{ ]", text, re.M) is not None


def test_metrics_after_a_question(client, clip: Path) -> None:
    sid = client.post("/v1/streams", json={"url": clip.as_uri()}).json()["id"]
    wait_stream(client, sid, lambda s: s["state"] == "ended")
    assert client.post(f"/v1/streams/{sid}/questions", json={"question": "what?", "max_tokens": 5}).status_code == 200
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    missing = [n for n in METRIC_NAMES if not has_metric(r.text, n)]
    assert not missing, missing
    s = samples(r.text)
    assert s["vqa_questions_total{outcome=\"ok\"}"] == 1
    assert s["vqa_time_to_first_token_seconds_count"] == 1 and s["vqa_e2e_request_latency_seconds_count"] == 1
    assert 1 <= s["vqa_generation_tokens_total"] <= 5
    assert s["vqa_frames_decoded_total"] == 30 and s["vqa_frames_encoded_total"] == 15
    assert s["vqa_encode_unit_seconds_count"] >= 15
    assert s["vqa_kv_usage_bytes{tier=\"host\"}"] > 0
    assert s["vqa_device_memory_allocated_bytes{kind=\"rss\"}"] > 0
    assert 'vqa_time_to_first_token_seconds_bucket{le="2560.0"}' in s  # vLLM's TTFT buckets
    # counters survive DELETE
    assert client.delete(f"/v1/streams/{sid}").status_code == 204
    s = samples(client.get("/metrics").text)
    assert s["vqa_frames_encoded_total"] == 15 and s["vqa_encode_lag_seconds"] == 0.0  # no streams left


def test_ready_lists_degraded_store(make_client) -> None:
    double = EngineDouble()
    client = make_client(engine_override=double)
    r = client.get("/ready")
    assert r.status_code == 200 and r.json()["degraded"] == []
    double.store_ok = False
    r = client.get("/ready")
    assert r.status_code == 503 and r.json()["ready"] is False
    assert r.json()["degraded"] == ["store.redis"] and r.json()["error"]["code"] == "not_ready"
    assert client.get("/health").status_code == 200


@pytest.mark.slow
def test_multiprocess_metrics(tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR, /metrics merges the per-process files (run in a fresh process)."""
    code = (
        "from fastapi.testclient import TestClient\n"
        "from streamvqa.server.app import create_app\n"
        "from streamvqa.server.settings import ServerSettings\n"
        "from tests.server.doubles import EngineDouble\n"
        "with TestClient(create_app(ServerSettings(auth='off'), engine=EngineDouble())) as c:\n"
        "    t = c.get('/metrics').text\n"
        "    assert 'vqa_questions_total{outcome=\"ok\"}' in t, t\n"
        "    assert 'vqa_streams_active' in t and 'vqa_time_to_first_token_seconds_bucket' in t, t\n"
        "print('OK')\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]
    assert list(tmp_path.glob("*.db"))  # the values live in the shared directory
