"""Prometheus metrics and request ids for the API, in one pure-ASGI middleware (no BaseHTTPMiddleware)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.cache import BalanceCache

REQUESTS = Counter("ledger_api_requests_total", "HTTP requests", ["route", "method", "status"])
LATENCY = Histogram("ledger_api_request_seconds", "HTTP request latency", ["route", "method"],
                    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

WAITERS = Gauge("ledger_api_waiters", "Requests waiting for the projection (wait=true, min_position)")
ANSWERS = Counter("ledger_api_waited_answers_total", "Waited transfers answered, by where the answer came from: "
                  "sent by the projector with its notification, or read from PostgreSQL", ["source"])
ANSWERS_SENT, ANSWERS_READ = ANSWERS.labels("projector"), ANSWERS.labels("read")


class CacheMetrics(Collector):
    """The balance cache's counts, read when scraped (nothing is counted twice on the read path)."""

    def __init__(self, cache: BalanceCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        cache = self.cache
        reads = CounterMetricFamily("ledger_api_balance_cache_reads", "Balance reads the cache was asked for, by "
                                    "result (a miss is read from PostgreSQL)", labels=["result"])
        reads.add_metric(["hit"], cache.hits)
        reads.add_metric(["miss"], cache.misses)
        yield reads
        asked = cache.hits + cache.misses
        yield GaugeMetricFamily("ledger_api_balance_cache_hit_ratio", "Hits over balance reads asked of the cache, "
                                "since the worker started", value=cache.hits / asked if asked else 0.0)
        yield GaugeMetricFamily("ledger_api_balance_cache_entries", "Balance answers held", value=len(cache))
        yield CounterMetricFamily("ledger_api_balance_cache_drops", "Times the whole cache was dropped (listener "
                                  "reconnected, projection switched)", value=cache.epoch)


def _request_id(scope: Scope) -> str:
    """The caller's `X-Request-Id` when it is sane, else a new one."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            if 1 <= len(value) <= 128 and value.isascii() and value.decode().isprintable():
                return value.decode()
            break
    return secrets.token_hex(8)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # labels() is a lock and a dict lookup on every call; the set of label values is small and fixed.
        self._latency: dict[tuple[str, str], Any] = {}
        self._requests: dict[tuple[str, str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            latency = self._latency.get((route, method))
            if latency is None:
                latency = self._latency.setdefault((route, method), LATENCY.labels(route, method))
            latency.observe(time.perf_counter() - started)
            counter = self._requests.get((route, method, status))
            if counter is None:
                child = REQUESTS.labels(route, method, str(status))
                counter = self._requests.setdefault((route, method, status), child)
            counter.inc()
