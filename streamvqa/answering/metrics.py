"""The vLLM answer process's metrics in the server's /metrics.

`VLLMCollector` asks the process for its Prometheus text at scrape time (vLLM's own `vllm:*`
families and the connector's `streamvqa_vllm_connector_*`, per tier among them) and re-exposes
it, beside the server-side counts of the answer engine (questions handed over, fallbacks, memory
exported). In the multi topology each answer worker runs that collector for its own vLLM and the
server gathers them (`WorkersCollector`, label ``worker``).
"""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families


class VLLMCollector:
    def __init__(self, engine) -> None:
        self.engine = engine

    def describe(self):
        return []  # registering must not ask the vLLM process (it may be starting)

    def collect(self):
        e = self.engine
        up = GaugeMetricFamily("streamvqa_vllm_up", "1 while the vLLM answer process is ready")
        up.add_metric([], 1.0 if e.process.ready else 0.0)
        yield up
        restarts = CounterMetricFamily("streamvqa_vllm_restarts", "restarts of the vLLM answer process")
        restarts.add_metric([], float(e.process.restarts))
        yield restarts
        questions = CounterMetricFamily("streamvqa_vllm_questions", "questions handed to the vLLM answer engine")
        questions.add_metric([], float(e.questions))
        yield questions
        fallbacks = CounterMetricFamily("streamvqa_vllm_fallbacks", "questions answered by the transformers "
                                        "engine because vLLM cannot take their memory", labels=["reason"])
        for reason, n in sorted(e.fallbacks.items()):
            fallbacks.add_metric([reason], float(n))
        yield fallbacks
        exported = CounterMetricFamily("streamvqa_vllm_memory_exported_bytes", "memory KV bytes written to "
                                       "shared memory for the vLLM connector")
        exported.add_metric([], float(e.kv_bytes))
        yield exported
        tokens = CounterMetricFamily("streamvqa_vllm_memory_exported_tokens", "memory tokens handed to vLLM")
        tokens.add_metric([], float(e.kv_tokens))
        yield tokens
        seconds = CounterMetricFamily("streamvqa_vllm_export_seconds", "time spent shifting and writing "
                                      "memory KV for vLLM")
        seconds.add_metric([], e.export_seconds)
        yield seconds
        text = e.process.metrics()
        if text:
            yield from text_string_to_metric_families(text)


def exposition(engine) -> str:
    """The answer engine's metrics as Prometheus text (the multi topology's answer worker hands it
    to the server, `ans.metrics`)."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(VLLMCollector(engine))
    return generate_latest(registry).decode()


class WorkersCollector:
    """The multi topology: every answer worker's answer-engine metrics, labelled ``worker=<role>``
    (one vLLM per answer worker: the same families, told apart by that label). `texts` returns
    {role: Prometheus text} at scrape time."""

    def __init__(self, texts) -> None:
        self.texts = texts

    def describe(self):
        return []

    def collect(self):
        from prometheus_client import Metric

        merged: dict[str, Metric] = {}
        for role, text in self.texts().items():
            for fam in text_string_to_metric_families(text):
                out = merged.get(fam.name)
                if out is None:
                    out = merged[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                out.samples += [s._replace(labels={**s.labels, "worker": role}) for s in fam.samples]
        yield from merged.values()
