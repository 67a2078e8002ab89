"""The connector's per-tier counts (no vLLM needed): loaded token ranges against the memory's
spans, prefix-cache hits, the Prometheus text; and the multi topology's relabelling."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from streamvqa.answering.metrics import WorkersCollector
from streamvqa.answering.tier_counts import TierCounts, spans


def test_loaded_ranges_are_counted_per_tier() -> None:
    c = TierCounts()
    spec = {"spans": spans(10, [("host", 20), ("disk", 30), ("host", 5)])}
    c.loaded(spec, 0, 65, bytes_per_token=4)  # a first question: everything
    assert c.blocks == {"sink": 1, "host": 2, "disk": 1}
    assert c.tokens == {"sink": 10, "host": 25, "disk": 30} and c.bytes == {"sink": 40, "host": 100, "disk": 120}
    c.loaded(spec, 25, 70, bytes_per_token=4)  # a partial reload, past the spans (captions' text)
    assert c.blocks == {"sink": 1, "host": 4, "disk": 2, "other": 1}
    assert c.tokens == {"sink": 10, "host": 35, "disk": 60, "other": 5}
    c.loaded({}, 0, 3, bytes_per_token=4)  # no spans (an older server): all "other"
    assert c.tokens["other"] == 8


def test_prefix_hits() -> None:
    c = TierCounts()
    c.matched(memory=100, external=100)  # nothing cached
    c.matched(memory=100, external=0)  # all cached: a hit
    c.matched(memory=100, external=36)  # cached but the last block
    c.matched(memory=0, external=0)  # an ordinary prompt: not counted
    assert (c.prefix_hits, c.prefix_hit_tokens) == (1, 164)


def test_text_is_prometheus_and_workers_are_labelled() -> None:
    c = TierCounts()
    c.loaded({"spans": spans(2, [("disk", 3)])}, 0, 5, bytes_per_token=8)
    c.matched(memory=5, external=0)
    fams = {f.name: f for f in text_string_to_metric_families(c.text())}
    assert fams["streamvqa_vllm_connector_bytes_loaded_by_tier"].type == "counter"
    got = {(s.name, s.labels.get("tier")): s.value for f in fams.values() for s in f.samples}
    assert got[("streamvqa_vllm_connector_bytes_loaded_by_tier_total", "disk")] == 24
    assert got[("streamvqa_vllm_connector_prefix_hits_total", None)] == 1
    merged = list(WorkersCollector(lambda: {"answer": c.text(), "answer-1": c.text()}).collect())
    hits = next(f for f in merged if f.name == "streamvqa_vllm_connector_prefix_hits")
    assert sorted(s.labels["worker"] for s in hits.samples) == ["answer", "answer-1"]
