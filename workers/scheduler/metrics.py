"""Prometheus metrics of a scheduler."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class SchedulerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.placements = Counter(
            "llmaas_scheduler_placements", "Placement decisions, by outcome", ["outcome"], registry=r
        )
        self.place_seconds = Histogram(
            "llmaas_scheduler_place_seconds",
            "Time to choose a worker",
            buckets=(0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01),
            registry=r,
        )
        self.live_workers = Gauge(
            "llmaas_scheduler_live_workers", "Workers with fresh heartbeats", registry=r
        )
