"""Cluster metrics: which replica this is (an info metric: join it onto any series by
``instance``), requests forwarded to owners, adoptions and how long they took."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

ADOPTION_BUCKETS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)


class ClusterMetrics:
    def __init__(self, registry: CollectorRegistry, replica: str, url: str) -> None:
        info = Gauge("vqa_replica_info", "This replica's name and advertised URL (always 1)",
                     ["replica", "url"], registry=registry)
        info.labels(replica=replica, url=url).set(1)
        self.forwarded = Counter("vqa_cluster_forwarded_requests_total",
                                 "Requests forwarded to the replica that owns the stream (or was placed on)",
                                 ["kind"], registry=registry)
        self.adoptions = Counter("vqa_cluster_adoptions_total",
                                 "Streams of dead replicas this replica claimed, by outcome",
                                 ["result"], registry=registry)
        self.adoption_seconds = Histogram("vqa_cluster_adoption_seconds",
                                          "Claim to ingest started, per adopted stream",
                                          buckets=ADOPTION_BUCKETS, registry=registry)
        self.registrations = Counter("vqa_cluster_registrations_total",
                                     "Times this replica took its lease (start, or after losing it)",
                                     registry=registry)
        self.fenced = Counter("vqa_cluster_fenced_streams_total",
                              "Local streams stopped because another replica adopted them meanwhile",
                              registry=registry)
