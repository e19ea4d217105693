"""``GET /metrics``: Prometheus metrics of the API and, from the workers topic, of every stream worker.

One scrape target covers the fleet: each worker's latest status (frames/s, mean batch, lag, partitions,
alive) comes from the records it publishes every 10 s, so workers need no endpoint of their own (they can
have one for distributions: ``CVOPS_METRICS_PORT``). The API's own requests are counted by route template
(never by raw path, which would let a caller create series at will) and timed.

``/metrics`` is a read like the others: with ``CVOPS_API_READ_PUBLIC=false`` the scraper sends a token
(Prometheus: ``authorization: {credentials_file: ...}`` in the scrape config).
"""

from __future__ import annotations

import time

from fastapi import Depends, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from api.auth import read_access


class _FleetCollector(Collector):
    """Reads the app's state at scrape time: nothing to keep up to date, nothing stale."""

    def __init__(self, app: FastAPI):
        self.app = app

    def collect(self):
        state = self.app.state
        directory = getattr(state, "workers", None)
        if directory is not None:
            alive = {w.worker_id for w in directory.alive()}
            gauges = {
                "frames_per_second": GaugeMetricFamily(
                    "cvops_worker_frames_per_second", "frames/s over the worker's last report", labels=["worker"]
                ),
                "mean_batch": GaugeMetricFamily("cvops_worker_mean_batch", "mean batch size", labels=["worker"]),
                "lag_s": GaugeMetricFamily("cvops_worker_lag_seconds", "how far behind it is, s", labels=["worker"]),
                "partitions": GaugeMetricFamily("cvops_worker_partitions", "frames partitions held", labels=["worker"]),
                "alive": GaugeMetricFamily("cvops_worker_up", "1 if it reported in the last 60 s", labels=["worker"]),
            }
            for w in directory.latest.values():
                gauges["frames_per_second"].add_metric([w.worker_id], w.frames_per_s)
                gauges["mean_batch"].add_metric([w.worker_id], w.mean_batch)
                gauges["lag_s"].add_metric([w.worker_id], w.lag_s)
                gauges["partitions"].add_metric([w.worker_id], len(w.partitions))
                gauges["alive"].add_metric([w.worker_id], 1.0 if w.worker_id in alive else 0.0)
            yield from gauges.values()
        writer = getattr(state, "writer", None)
        if writer is not None:
            rows = CounterMetricFamily("cvops_store_rows_written", "rows the store writer inserted", labels=["table"])
            for table, n in writer.rows_written.items():
                rows.add_metric([table], n)
            yield rows
            failed = CounterMetricFamily("cvops_store_failed_inserts", "inserts that failed and were retried")
            failed.add_metric([], writer.failed_inserts)
            yield failed
            rejected = CounterMetricFamily("cvops_store_rejected_rows", "rows refused and sent to dead letters")
            rejected.add_metric([], writer.rejected)
            yield rejected
        feed = getattr(state, "alert_feed", None)
        if feed is not None:
            subs = GaugeMetricFamily("cvops_api_sse_subscribers", "clients on the live alert stream")
            subs.add_metric([], len(feed.subscriptions))
            yield subs


def install(app: FastAPI) -> None:
    """Count and time every request; serve ``/metrics``."""
    registry = CollectorRegistry()
    requests = Counter("cvops_api_requests", "HTTP requests", ["method", "route", "status"], registry=registry)
    seconds = Histogram(
        "cvops_api_request_seconds", "HTTP request time, s", ["method", "route"], registry=registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    )  # fmt: skip
    registry.register(_FleetCollector(app))

    @app.middleware("http")
    async def count(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", None) or "unmatched"  # a template: /api/v1/cameras/{camera_id}
        if template != "/metrics":
            requests.labels(request.method, template, str(response.status_code)).inc()
            seconds.labels(request.method, template).observe(time.perf_counter() - start)
        return response

    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(read_access)])
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
