"""End to end on real parts: the embedded broker started by ./dev test, the worker and the API as the
``cvops`` processes a user runs, embedded ClickHouse, NanoDet-m on real street footage."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from core.contracts import DeadLetter, FrameHeader, Prediction, decode_record, pack_frame
from core.settings import Settings
from core.topology import create_topics
from streams.gateway import publish
from tests.conftest import free_port
from tests.processes import counts, cvops, wait_for

pytestmark = pytest.mark.integration

VEHICLES_AND_PEOPLE = {"person", "bicycle", "car", "motorcycle", "bus", "truck"}


async def read_topic(settings: Settings, name: str, n: int) -> list:
    consumer = AIOKafkaConsumer(
        settings.topic(name), bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    records = []
    try:
        deadline = time.monotonic() + 60
        while len(records) < n and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def frames_left(settings: Settings) -> int:
    """Frames still held by the broker: the end offsets minus the beginning offsets of the frames topic."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        parts = [TopicPartition(settings.topic("frames"), p) for p in range(settings.frames_partitions)]
        start, end = await consumer.beginning_offsets(parts), await consumer.end_offsets(parts)
        return sum(end[tp] - start[tp] for tp in parts)
    finally:
        await consumer.stop()


async def publish_corrupt(settings: Settings) -> list[bytes]:
    good_header = FrameHeader(
        frame_id="cam-1:9:999", camera_id="cam-1", seq=999, captured_at=time.time(), width=640, height=272
    )
    bad = [pack_frame(good_header, b"\xff\xd8\xff\xe0 this is not a JPEG at all"), b"garbage that is no frame"]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for value in bad:
            await producer.send_and_wait(settings.topic("frames"), value, key=b"cam-1")
    finally:
        await producer.stop()
    return bad


def test_frames_flow_to_predictions_metrics_and_dead_letters(settings: Settings, tmp_path: Path):
    # The worker's own Prometheus endpoint; processed frames deleted every second.
    settings = settings.model_copy(update={"metrics_port": free_port(), "frames_purge_every_s": 1.0})
    asyncio.run(create_topics(settings))
    worker_log, api_log = tmp_path / "worker.log", tmp_path / "api.log"
    with cvops(settings, "worker", worker_log) as worker, cvops(settings, "api", api_log) as api:
        procs = [(worker, worker_log), (api, api_log)]
        client = httpx.Client(base_url=f"http://127.0.0.1:{settings.api_port}", timeout=10)
        wait_for(lambda: counts(client), "the API", procs)

        sent = asyncio.run(publish(settings, cameras=3, max_frames=100, fps=200.0))
        bad = asyncio.run(publish_corrupt(settings))
        assert sent == 300

        final = wait_for(
            lambda: (
                (c := counts(client))
                and c["metric_rows"] >= 300
                and c["prediction_rows"] >= 300  # a separate insert from the metrics': wait for both
                and c["dead_letter_rows"] >= 2
                and c
            ),
            "300 metric rows and 2 dead letters in ClickHouse",
            procs,
        )
        assert final["frames_published"] == 302
        assert final["metric_rows"] == 300
        assert final["prediction_rows"] == 300
        assert final["dead_letter_rows"] == 2

        cameras = client.get("/api/v1/cameras").json()
        assert {c["camera_id"]: c["frames"] for c in cameras} == {"cam-1": 100, "cam-2": 100, "cam-3": 100}
        assert client.get("/health/ready").json()["status"] == "ok"

        live = wait_for(
            lambda: [w for w in client.get("/api/v1/workers").json() if w["alive"]], "a worker status", procs
        )
        status = live[0]["status"]
        assert (status["model_name"], status["model_version"]) == ("nanodet-m", "1.0.0")
        assert "CPUExecutionProvider" in status["providers"]
        assert status["decoder"].startswith("cpu: OpenCV")  # the frame backend in use
        assert sorted(status["partitions"]) == [0, 1, 2]
        assert 0 <= status["lag_s"] < 120  # how far behind its newest frame was, s
        models = {m["name"]: m for m in client.get("/api/v1/models").json()}
        assert models["nanodet-m"]["workers"] == [status["worker_id"]]

        # Every frame processed and committed, so the worker deletes them all from the frames topic.
        left = wait_for(lambda: (f := asyncio.run(frames_left(settings))) == 0 and [f], "the frames purged", procs)
        assert left == [0]
        assert "deleting processed frames" in worker_log.read_text()

        scraped = httpx.get(f"http://127.0.0.1:{settings.metrics_port}/metrics").text
        own = {s.name: s.value for f in text_string_to_metric_families(scraped) for s in f.samples if not s.labels}
        assert own["cvops_worker_frames_total"] == 300
        assert own["cvops_worker_batch_size_sum"] == 300

    predictions = [decode_record(Prediction, r.value) for r in asyncio.run(read_topic(settings, "predictions", 300))]
    assert len(predictions) >= 300
    assert len({p.frame_id for p in predictions}) == 300
    assert all(p.model_name == "nanodet-m" and p.model_version for p in predictions)
    assert all(p.timings.inference_ms > 0 for p in predictions)
    confident = {d.label for p in predictions for d in p.detections if d.score > 0.4}
    assert confident & VEHICLES_AND_PEOPLE, f"no person or vehicle found, only {confident}"

    dead = [decode_record(DeadLetter, r.value) for r in asyncio.run(read_topic(settings, "deadletters", 2))]
    assert sorted(d.reason for d in dead) == ["bad_magic", "corrupt_image"]
    assert sorted(d.payload() for d in dead) == sorted(bad)
    assert all(d.detail and d.source_topic == settings.topic("frames") for d in dead)
