"""Prometheus metrics of a guard."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram


@dataclass
class GuardMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.screened = Counter(
            "llmaas_guard_screened",
            "Jobs screened, by verdict (allowed, blocked, exempt)",
            ["verdict"],
            registry=r,
        )
        self.blocked = Counter(
            "llmaas_guard_blocked", "Blocked jobs, by layer and rule", ["layer", "rule"], registry=r
        )
        self.weighed = Counter(
            "llmaas_guard_signals_weighed",
            "Jobs whose rules found only signals, weighed by the learned layer: blocked or cleared",
            ["outcome"],
            registry=r,
        )
        self.screen_seconds = Histogram(
            "llmaas_guard_screen_seconds",
            "Time to screen one job",
            buckets=(0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05),
            registry=r,
        )
        self.score_seconds = Histogram(
            "llmaas_guard_score_seconds",
            "Time to score one job with the learned layer (waiting for the scoring thread included)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.errors = Counter("llmaas_guard_errors", "Jobs dropped, by reason", ["reason"], registry=r)
