"""Prometheus metrics of a stream worker, served on ``CVOPS_METRICS_PORT`` (0, the default, serves none).

The API's ``/metrics`` already carries every worker's status (frames/s, batch, lag) from the workers topic,
so one scrape target covers a fleet; a worker's own endpoint adds distributions the status cannot carry:
batch sizes, per-frame stage times and the latency from capture to prediction.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from streams.process import BatchResult

log = logging.getLogger(__name__)

MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.frames = Counter("cvops_worker_frames", "frames inferred", registry=r)
        self.dead_letters = Counter(
            "cvops_worker_dead_letters", "messages sent to dead letters", ["reason"], registry=r
        )
        self.alerts = Counter("cvops_worker_alerts", "alert records sent", ["type", "status"], registry=r)
        self.batch_size = Histogram(
            "cvops_worker_batch_size", "frames per inference batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )  # fmt: skip
        self.stage_ms = Histogram(
            "cvops_worker_stage_ms", "per-frame time of each stage, ms", ["stage"], buckets=MS, registry=r
        )
        self.latency_ms = Histogram("cvops_worker_latency_ms", "capture to prediction, ms", buckets=MS, registry=r)
        self.lag_s = Gauge("cvops_worker_lag_seconds", "age of the newest frame in the last batch, s", registry=r)
        self.cameras = Gauge("cvops_worker_cameras", "cameras this worker holds a monitor for", registry=r)

    def observe(self, result: BatchResult) -> None:
        """Count one batch's outputs."""
        if result.predictions:
            self.frames.inc(len(result.predictions))
            self.batch_size.observe(result.predictions[0].batch_size)
        for p in result.predictions:
            t = p.timings
            for stage in ("queue_ms", "decode_ms", "preprocess_ms", "inference_ms", "postprocess_ms"):
                self.stage_ms.labels(stage.removesuffix("_ms")).observe(getattr(t, stage))
            self.latency_ms.observe(max(0.0, (p.processed_at - p.captured_at) * 1e3))
        for d in result.dead_letters:
            self.dead_letters.labels(d.reason).inc()
        for a in result.alerts:
            self.alerts.labels(a.type, a.status).inc()

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        start_http_server(port, addr=host, registry=self.registry)
        log.info("Prometheus metrics on http://%s:%d/metrics", host, port)
