"""Prometheus metrics of a metering process (labels: the stream's sink, usage, audit or security)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass
class MeteringMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.stored = Counter("llmaas_metering_rows_stored", "Rows inserted", ["sink"], registry=r)
        self.duplicates = Counter(
            "llmaas_metering_duplicates_skipped",
            "Events delivered again and not stored twice",
            ["sink"],
            registry=r,
        )
        self.unreadable = Counter(
            "llmaas_metering_unreadable_events",
            "Events that could not be decoded (terminated)",
            ["sink"],
            registry=r,
        )
        self.set_aside = Counter(
            "llmaas_metering_events_set_aside",
            "Events whose row could not be made (a bug; retried every few minutes, the rest go on)",
            ["sink"],
            registry=r,
        )
        self.store_failures = Counter(
            "llmaas_metering_store_failures",
            "Batches ClickHouse did not take (retried)",
            ["sink"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "llmaas_metering_batch_seconds",
            "Time to store one batch",
            ["sink"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "llmaas_metering_lag_seconds",
            "Age of the oldest event of the last batch stored, when it was stored (usage and work records)",
            ["sink"],
            registry=r,
        )
        self.queries = Counter("llmaas_metering_queries", "Report queries answered", ["outcome"], registry=r)

    def start(self, sink: str) -> None:
        """Every series of ``sink`` present from the start at 0, so that a dashboard or an alert
        sees "none yet" rather than "no data"."""
        for family in (self.stored, self.duplicates, self.unreadable, self.set_aside, self.store_failures):
            family.labels(sink)
        self.lag.labels(sink)
