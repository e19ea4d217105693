"""GET /metrics: the API's requests by route template, and every worker's status from the workers topic."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from core.contracts import WorkerStatus, encode_record


def samples(client: httpx.Client) -> dict[tuple[str, tuple], float]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def test_requests_are_counted_by_route_template_not_by_raw_path(client: httpx.Client):
    camera = f"m-{uuid.uuid4().hex[:6]}"
    client.get(f"/api/v1/cameras/{camera}")
    client.get(f"/no/such/path/{camera}")
    m = samples(client)
    assert m[("cvops_api_requests_total", (("method", "GET"), ("route", "/api/v1/cameras/{camera_id}"),
                                           ("status", "404")))] >= 1  # fmt: skip
    assert m[("cvops_api_requests_total", (("method", "GET"), ("route", "unmatched"), ("status", "404")))] >= 1
    assert not any(camera in str(labels) for _, labels in m)


def test_worker_status_records_become_worker_gauges(client: httpx.Client, api_config):
    settings, _ = api_config
    worker = f"w-{uuid.uuid4().hex[:6]}"
    status = WorkerStatus(
        worker_id=worker, model_name="nanodet-m", model_version="1.0.0", providers=["CPUExecutionProvider"],
        batch_max_size=8, partitions=[0, 1], frames_per_s=12.5, mean_batch=6.0, dead_letters=0, alerts=0,
        lag_s=1.5, sent_at=time.time(),
    )  # fmt: skip

    async def send():
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(settings.topic("workers"), encode_record(status), key=worker.encode())
        finally:
            await producer.stop()

    asyncio.run(send())
    key = (("worker", worker),)
    deadline = time.monotonic() + 30
    while ("cvops_worker_up", key) not in (m := samples(client)) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert m[("cvops_worker_up", key)] == 1.0
    assert m[("cvops_worker_frames_per_second", key)] == 12.5
    assert m[("cvops_worker_lag_seconds", key)] == 1.5
    assert m[("cvops_worker_partitions", key)] == 2
