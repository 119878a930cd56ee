"""Prometheus metrics of the htsec server (``/metrics``), on a registry of its own."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.responses import Response

__all__ = ["Metrics", "install"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "htsec_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "htsec_http_request_seconds",
            "HTTP request latency by route",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.fetches = Counter(
            "htsec_access_token_fetches", "Access tokens handed out", registry=self.registry
        )
        self.credentials = Gauge(
            "htsec_credentials",
            "Credentials by service and state",
            ["service", "state"],
            registry=self.registry,
        )


def install(app: FastAPI, states: Callable[[], dict[str, dict[str, int]]] | None = None) -> Metrics:
    """Count and time every request; serve ``/metrics``."""
    metrics = Metrics()
    app.state.metrics = metrics

    @app.middleware("http")
    async def measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.latency.labels(path).observe(time.perf_counter() - start)
        metrics.requests.labels(path, request.method, str(response.status_code)).inc()
        return response

    @app.get("/metrics", include_in_schema=False)
    def export() -> Response:
        if states is not None:
            metrics.credentials.clear()
            for service, by_state in states().items():
                for state, n in by_state.items():
                    metrics.credentials.labels(service, state).set(n)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return metrics
