"""Prometheus metrics of the edge (labels bounded: route, status class, model served by a worker)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass
class EdgeMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "llmaas_edge_requests", "HTTP requests answered", ["route", "status_class"], registry=r
        )
        self.duration = Histogram(
            "llmaas_edge_request_duration_seconds",
            "From request to last byte",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "llmaas_edge_time_to_first_token_seconds",
            "From request to first generated text",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("llmaas_edge_tokens", "Tokens served", ["model", "kind"], registry=r)
        self.in_flight = Gauge("llmaas_edge_in_flight", "Requests in progress", ["route"], registry=r)
        self.errors = Counter("llmaas_edge_errors", "Error responses, by code", ["code"], registry=r)
        self.slow_readers = Counter(
            "llmaas_edge_slow_readers",
            "Answers cancelled because their client read slower than the engine wrote",
            registry=r,
        )
        self.disconnects = Counter(
            "llmaas_edge_client_disconnects", "Clients gone before the answer was complete", registry=r
        )
        self.usage_queued = Gauge(
            "llmaas_edge_usage_events_queued", "Usage events waiting for NATS to store them", registry=r
        )
        self.usage_lost = Counter(
            "llmaas_edge_usage_events_lost", "Usage events dropped (outbox full or edge stopped)", registry=r
        )
        self.nats_connected = Gauge("llmaas_edge_nats_connected", "1 while connected to NATS", registry=r)
        self.batch_lines = Counter(
            "llmaas_edge_batch_lines",
            "Batch lines this edge ran, by outcome (completed, failed: ended; deferred, preempted: put "
            "back for interactive work; retried: the platform failed them, run again)",
            ["outcome"],
            registry=r,
        )
        self.batches = Gauge(
            "llmaas_edge_batches", "Batches by status (as this edge sees them)", ["status"], registry=r
        )
        self.batch_lines_queued = Gauge(
            "llmaas_edge_batch_lines_queued", "Batch lines not done yet, of every running batch", registry=r
        )
        self.batch_lines_running = Gauge(
            "llmaas_edge_batch_lines_running", "Batch lines this edge runs now", registry=r
        )
        self.door_logins = Counter(
            "llmaas_edge_door_logins",
            "Connections to the NATS door this edge authorized or refused (auth callout)",
            ["outcome"],
            registry=r,
        )
        self.door_requests = Counter(
            "llmaas_edge_door_requests",
            "Requests over the NATS door, by what they asked and the answer's status",
            ["what", "status"],
            registry=r,
        )
        self.door_kicks = Counter(
            "llmaas_edge_door_kicks", "Connections of revoked keys closed at the NATS door", registry=r
        )
