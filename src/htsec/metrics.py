"""Prometheus metrics of the htsec server (``/metrics``), on a registry of its own."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Metrics", "install"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.extra: list[CollectorRegistry] = []  # e.g. the in-process credmon's
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


class _Measure:
    """Pure ASGI middleware: count and time every HTTP request by route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()


def install(app: FastAPI, states: Callable[[], dict[str, dict[str, int]]] | None = None) -> Metrics:
    """Count and time every request; serve ``/metrics``."""
    metrics = Metrics()
    app.state.metrics = metrics

    app.add_middleware(_Measure, metrics=metrics)

    @app.get("/metrics", include_in_schema=False)
    def export() -> Response:
        if states is not None:
            metrics.credentials.clear()
            for service, by_state in states().items():
                for state, n in by_state.items():
                    metrics.credentials.labels(service, state).set(n)
        body = b"".join(generate_latest(r) for r in (metrics.registry, *metrics.extra))
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return metrics
