"""The credmon's Prometheus metrics (docs/htsec-credmon.md names them)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["CredmonMetrics"]


class CredmonMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.refreshes = Counter(
            "htsec_credmon_refreshes", "Successful refreshes", ["provider"], registry=self.registry
        )
        self.failures = Counter(
            "htsec_credmon_failures",
            "Failed refreshes by reason",
            ["provider", "reason"],
            registry=self.registry,
        )
        self.time_to_expiry = Histogram(
            "htsec_credmon_time_to_expiry_seconds",
            "Remaining lifetime of access tokens when they were refreshed",
            registry=self.registry,
            buckets=(0, 10, 30, 60, 120, 300, 600, 1200, 3600, 7200, float("inf")),
        )
        self.in_flight = Gauge(
            "htsec_credmon_queue_depth",
            "Claimed credentials being refreshed",
            registry=self.registry,
        )
