"""Prometheus metrics: vLLM names and buckets where one exists (``vqa_`` namespace).

No series carries a stream id (any API key may scrape; stream ids belong to their owners):
per-stream figures are in the keyed ``GET /v1/streams/{id}``.

Histograms and counters are fed by the engine (``engine.observers``) and by the answer path;
ingest and session figures are polled at scrape time by :class:`StreamCollector`. Each app owns
its :class:`~prometheus_client.CollectorRegistry` (tests run many apps in one process). With
``PROMETHEUS_MULTIPROC_DIR`` set, ``/metrics`` merges every process's files
(``prometheus_client.multiprocess``) and adds this process's polled figures.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .registry import StreamRegistry, session_stats

# vllm/v1/metrics: TTFT, inter-token, request latency family
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
               20.0, 40.0, 80.0)
# streams per batched encode forward; seconds from a frame's arrival to its block (encode scheduler)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
REQUEST_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                   120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)

PREFIX = "vqa_"

#: every metric family name /metrics exposes (tests check them all)
METRIC_NAMES = (
    "vqa_time_to_first_token_seconds",
    "vqa_inter_token_latency_seconds",
    "vqa_e2e_request_latency_seconds",
    "vqa_request_queue_time_seconds",
    "vqa_request_retrieval_time_seconds",
    "vqa_request_prefill_time_seconds",
    "vqa_encode_unit_seconds",
    "vqa_questions_total",
    "vqa_request_success_total",
    "vqa_generation_tokens_total",
    "vqa_streams_active",
    "vqa_frames_decoded_total",
    "vqa_frames_encoded_total",
    "vqa_frames_dropped_total",
    "vqa_encode_lag_seconds",
    "vqa_encode_frame_lag_seconds",
    "vqa_encode_batch_size",
    "vqa_kv_usage_bytes",
    "vqa_kv_blocks",
    "vqa_device_memory_allocated_bytes",
    "vqa_device_memory_reserved_bytes",
)


def process_rss_bytes() -> int:
    """Resident set size of this process (``/proc/self/statm``; peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def device_memory(device: str) -> tuple[str, int, int]:
    """``(kind, allocated, reserved)``: ``torch.cuda`` figures on a CUDA device, else process RSS."""
    if device.startswith("cuda"):
        try:
            import torch

            if torch.cuda.is_available():
                dev = torch.device(device)
                return "cuda", int(torch.cuda.memory_allocated(dev)), int(torch.cuda.memory_reserved(dev))
        except Exception:
            pass
    rss = process_rss_bytes()
    return "rss", rss, rss


class ServerMetrics:
    """The push-style metrics (histograms, counters) and the engine observer that feeds them."""

    def __init__(self, registry: CollectorRegistry, model_name: str = "") -> None:
        self.registry = registry
        self.model_name = model_name
        r = registry
        self.ttft = Histogram(PREFIX + "time_to_first_token_seconds", "Time to first answer token.",
                              buckets=TTFT_BUCKETS, registry=r)
        self.itl = Histogram(PREFIX + "inter_token_latency_seconds", "Time between answer tokens.",
                             buckets=ITL_BUCKETS, registry=r)
        self.e2e = Histogram(PREFIX + "e2e_request_latency_seconds", "Question latency, end to end.",
                             buckets=REQUEST_BUCKETS, registry=r)
        self.queue = Histogram(PREFIX + "request_queue_time_seconds", "Time a question waited.",
                               buckets=REQUEST_BUCKETS, registry=r)
        self.retrieval = Histogram(PREFIX + "request_retrieval_time_seconds",
                                   "Time spent retrieving KV blocks for a question.",
                                   buckets=TTFT_BUCKETS, registry=r)
        self.prefill = Histogram(PREFIX + "request_prefill_time_seconds", "Question prefill time.",
                                 buckets=REQUEST_BUCKETS, registry=r)
        self.encode_unit = Histogram(PREFIX + "encode_unit_seconds", "Time to encode one stream unit.",
                                     buckets=TTFT_BUCKETS, registry=r)
        self.batch_size = Histogram(PREFIX + "encode_batch_size", "Streams in one batched encode forward.",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.frame_lag = Histogram(PREFIX + "encode_frame_lag_seconds",
                                   "Per encoded frame, across streams: seconds from sampled to encoded.",
                                   buckets=LAG_BUCKETS, registry=r)
        self._encode_drops: dict[str, int] = {}
        self.questions = Counter(PREFIX + "questions", "Questions received, by outcome.", ["outcome"],
                                 registry=r)
        self.success = Counter(PREFIX + "request_success", "Answered questions, by finish reason.",
                               ["finished_reason"], registry=r)
        self.tokens = Counter(PREFIX + "generation_tokens", "Generated answer tokens.", registry=r)
        # make every label set we know of visible from the start
        for outcome in ("ok", "error"):
            self.questions.labels(outcome)
        for reason in ("stop", "length"):
            self.success.labels(reason)

    # -- engine observer (engine.observers.append(metrics)) -----------------------------------

    def on_unit_encoded(self, stream_id: str, seconds: float, frames: int) -> None:
        self.encode_unit.observe(max(0.0, float(seconds)))

    def on_encode_batch(self, size: int) -> None:
        self.batch_size.observe(size)

    def on_frame_lag(self, seconds: float) -> None:
        self.frame_lag.observe(max(0.0, float(seconds)))

    def on_frames_dropped(self, reason: str, n: int) -> None:
        self._encode_drops[reason] = self._encode_drops.get(reason, 0) + n

    def encode_drops(self) -> dict[str, int]:
        """Frames the encode scheduler shed, by reason (joined to ingest's in the dropped counter)."""
        return dict(self._encode_drops)

    def on_token(self, stream_id: str, seconds_since_prev: float) -> None:
        self.itl.observe(max(0.0, float(seconds_since_prev)))

    def on_answer(self, stream_id: str, answer: Any) -> None:
        t = getattr(answer, "timings", None) or {}
        self.ttft.observe(float(t.get("first_token_s", 0.0)))
        self.e2e.observe(float(t.get("total_s", 0.0)))
        self.queue.observe(float(t.get("queue_s", 0.0)))
        self.retrieval.observe(float(t.get("retrieval_s", 0.0)))
        self.prefill.observe(float(t.get("prefill_s", 0.0)))
        self.success.labels(getattr(answer, "finish_reason", "stop") or "stop").inc()
        self.tokens.inc(len(getattr(answer, "token_ids", ()) or ()))

    # -- answer path --------------------------------------------------------------------------

    def question_done(self, ok: bool) -> None:
        self.questions.labels("ok" if ok else "error").inc()


class StreamCollector(Collector):
    """Scrape-time figures: streams, frames, lag, KV bytes/blocks per tier, device memory."""

    def __init__(self, streams: StreamRegistry, device: Callable[[], str],
                 encode_drops: Callable[[], dict[str, int]] = dict) -> None:
        self.streams = streams
        self.device = device
        self.encode_drops = encode_drops

    def describe(self) -> list[Metric]:
        return []  # collected lazily; no duplicate-name checks against push metrics needed

    def collect(self) -> Iterator[Metric]:
        entries, retired = self.streams.snapshot()
        active = GaugeMetricFamily(PREFIX + "streams_active", "Streams registered and not final.",
                                   labels=["state"])
        decoded = CounterMetricFamily(PREFIX + "frames_decoded", "Frames decoded by ingest.")
        encoded = CounterMetricFamily(PREFIX + "frames_encoded", "Frames encoded into KV by the engine.")
        dropped = CounterMetricFamily(PREFIX + "frames_dropped", "Frames dropped, by reason.",
                                      labels=["reason"])
        # No stream label: any key may scrape, and stream ids are the owners' (and unbounded
        # cardinality); each stream's own lag is in its keyed GET /v1/streams/{id}.
        lag = GaugeMetricFamily(PREFIX + "encode_lag_seconds",
                                "Largest encode lag among the streams: newest decoded frame time minus "
                                "newest frame handed to the encoder.")
        max_lag = 0.0
        kv_bytes = GaugeMetricFamily(PREFIX + "kv_usage_bytes", "KV cache bytes, by tier.", labels=["tier"])
        kv_blocks = GaugeMetricFamily(PREFIX + "kv_blocks", "KV cache blocks, by tier.", labels=["tier"])
        states: dict[str, int] = {"connecting": 0, "running": 0, "reconnecting": 0, "recovering": 0}
        n_decoded, n_encoded = retired.frames_decoded, retired.frames_encoded
        drops = dict(retired.frames_dropped)
        drops.setdefault("encoder_behind", 0)
        drops.setdefault("encode_overload", 0)
        for reason, n in self.encode_drops().items():
            drops[reason] = drops.get(reason, 0) + n
        tier_bytes: dict[str, int] = {}
        tier_blocks: dict[str, int] = {}
        for e in entries:
            ing = e.ingest_stats()
            ses = session_stats(e.session)
            if ing.state in states:
                states[ing.state] += 1
            n_decoded += ing.frames_decoded
            n_encoded += int(ses.get("frames_encoded", 0) or 0)
            for reason, n in ing.frames_dropped.items():
                drops[reason] = drops.get(reason, 0) + n
            max_lag = max(max_lag, float(ing.encode_lag_s))
            for tier, n in (ses.get("kv_bytes") or {}).items():
                tier_bytes[str(tier)] = tier_bytes.get(str(tier), 0) + int(n)
            for tier, n in (ses.get("kv_blocks") or {}).items():
                tier_blocks[str(tier)] = tier_blocks.get(str(tier), 0) + int(n)
        for state, n in states.items():
            active.add_metric([state], n)
        lag.add_metric([], max_lag)
        decoded.add_metric([], n_decoded)
        encoded.add_metric([], n_encoded)
        for reason, n in sorted(drops.items()):
            dropped.add_metric([reason], n)
        for tier, n in sorted(tier_bytes.items()):
            kv_bytes.add_metric([tier], n)
        for tier, n in sorted(tier_blocks.items()):
            kv_blocks.add_metric([tier], n)
        kind, allocated, reserved = device_memory(self.device())
        alloc = GaugeMetricFamily(PREFIX + "device_memory_allocated_bytes",
                                  "Model device memory allocated (kind=cuda) or process RSS (kind=rss).",
                                  labels=["kind"])
        res = GaugeMetricFamily(PREFIX + "device_memory_reserved_bytes",
                                "Model device memory reserved (kind=cuda) or process RSS (kind=rss).",
                                labels=["kind"])
        alloc.add_metric([kind], allocated)
        res.add_metric([kind], reserved)
        yield from (active, decoded, encoded, dropped, lag, kv_bytes, kv_blocks, alloc, res)


def render(registry: CollectorRegistry, collector: Collector) -> bytes:
    """The ``/metrics`` body: this app's registry, or every process's files in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        merged.register(collector)
        return generate_latest(merged)
    return generate_latest(registry)
