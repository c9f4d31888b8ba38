"""Prometheus metrics of an engine worker (labels: model and outcome only)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from workers.engines.base import EngineLoad

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass
class WorkerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "llmaas_worker_requests", "Jobs finished, by outcome", ["model", "outcome"], registry=r
        )
        self.in_flight = Gauge("llmaas_worker_in_flight", "Jobs running now", registry=r)
        self.ttft = Histogram(
            "llmaas_worker_time_to_first_token_seconds",
            "From job arrival to first delta",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("llmaas_worker_tokens", "Tokens processed", ["model", "kind"], registry=r)
        self.errors = Counter("llmaas_worker_errors", "Jobs failed, by error code", ["code"], registry=r)
        self.batch_yielded = Counter(
            "llmaas_worker_batch_yielded",
            "Batch jobs put back for interactive work: refused (batch seats full) or preempted",
            ["reason"],
            registry=r,
        )
        self.batch_running = Gauge("llmaas_worker_batch_running", "Batch jobs running now", registry=r)

    def watch_engine(self, load: Callable[[], EngineLoad]) -> None:
        """Export the engine's own view (read at scrape time, so it is never stale)."""
        self.registry.register(_EngineCollector(load))


class _EngineCollector(Collector):
    def __init__(self, load: Callable[[], EngineLoad]) -> None:
        self.load = load

    def collect(self) -> Iterator[Metric]:
        now = self.load()
        yield GaugeMetricFamily("llmaas_engine_running", "Sequences the engine runs now", now.running)
        yield GaugeMetricFamily("llmaas_engine_waiting", "Sequences queued in the engine", now.waiting)
        yield GaugeMetricFamily(
            "llmaas_engine_kv_cache_usage", "Share of KV cache in use", now.kv_cache_usage
        )
        yield CounterMetricFamily(
            "llmaas_engine_generated_tokens",
            "Tokens the engine generated, aborted sequences included",
            now.generated_tokens,
        )
