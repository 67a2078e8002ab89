"""Grafana dashboard and Prometheus config: they parse, and every metric queried is one the app exports."""

from __future__ import annotations

import json
import re

import pytest
from prometheus_client import CollectorRegistry

from streamvqa.server.metrics import METRIC_NAMES, ServerMetrics, StreamCollector
from streamvqa.server.registry import StreamRegistry
from streamvqa.server.settings import ServerSettings

from .conftest import DEPLOY, load_yaml

DASHBOARD = DEPLOY / "grafana" / "dashboards" / "streamvqa.json"
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",), "summary": ("_sum", "_count", "_created")}
PROMQL_WORDS = {"by", "without", "le", "on", "ignoring", "group_left", "group_right"}


@pytest.fixture(scope="module")
def exported() -> tuple[set[str], set[str]]:
    """(series names, label names) of the app's real registry: ServerMetrics + StreamCollector."""
    registry = CollectorRegistry()
    ServerMetrics(registry)
    registry.register(StreamCollector(StreamRegistry(None, ServerSettings()), lambda: "cpu"))
    names: set[str] = set()
    labels: set[str] = {"le", "job", "instance"}
    for fam in registry.collect():
        names.update(fam.name + s for s in SUFFIXES.get(fam.type, ("",)))
        names.update(s.name for s in fam.samples)
        labels.update(k for s in fam.samples for k in s.labels)
        labels.update(getattr(fam, "_labelnames", ()))  # families with no samples yet (no streams)
    return names, labels


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _exprs(dash: dict) -> list[str]:
    out = []
    for panel in dash["panels"]:
        out += [t["expr"] for t in panel.get("targets", [])]
    out += [v["query"]["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return out


def test_registry_exports_every_documented_family(exported):
    """The registry built here is the app's: the families it holds are metrics.METRIC_NAMES."""
    names, _ = exported
    for family in METRIC_NAMES:
        assert family in names or f"{family}_bucket" in names, family


def test_dashboard_metrics_exist(exported):
    names, _ = exported
    used = {m for e in _exprs(_dashboard()) for m in re.findall(r"\bvqa_[a-z0-9_]+", e)}
    assert used, "the dashboard queries no vqa_ metric"
    assert not used - names, f"metrics not exported by streamvqa/server/metrics.py: {sorted(used - names)}"


def test_dashboard_labels_exist(exported):
    _, labels = exported
    used = set()
    for e in _exprs(_dashboard()):
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", e):
            used.update(x.strip() for x in group.split(",") if x.strip())
        used.update(re.findall(r"\{(\w+)=~?", e))
    assert not used - labels, f"labels not exported: {sorted(used - labels)}"


def test_dashboard_has_the_required_panels():
    exprs = _exprs(_dashboard())
    joined = "\n".join(exprs)
    for metric in ("vqa_time_to_first_token_seconds", "vqa_e2e_request_latency_seconds"):
        for q in ("0.5", "0.9", "0.99"):
            assert f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket" in joined, (metric, q)
    for metric in ("vqa_encode_lag_seconds", "vqa_frames_dropped_total", "vqa_kv_usage_bytes",
                   "vqa_device_memory_allocated_bytes"):
        assert metric in joined, metric
    assert "sum by (tier) (vqa_kv_usage_bytes" in joined


def test_dashboard_panels_use_the_provisioned_datasource():
    ds = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")["datasources"][0]
    dash = _dashboard()
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == ds["uid"], panel["title"]
    provider = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "streamvqa.yml")["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_prometheus_config_parses():
    prom = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    job = jobs["streamvqa"]
    assert job["metrics_path"] == "/metrics"
    assert float(job["scrape_timeout"].rstrip("s")) < float(job["scrape_interval"].rstrip("s"))
