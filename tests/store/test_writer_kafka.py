"""The writer on the real broker started by ./dev test: rows stored once, offsets committed after the insert,
a store outage survived, dead letters published."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from core.contracts import DeadLetter, decode_record, encode_record
from core.settings import Settings
from core.topology import create_topics
from store import Store
from store.writer import StoreWriter
from tests.store.records import LIMITS, metrics

pytestmark = pytest.mark.integration

NOW = time.time() - 60


class DownThenUp:
    def __init__(self, inner: Store, failures: int):
        self.inner, self.failures, self.dsn = inner, failures, inner.dsn

    def insert(self, *args, **kwargs):
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("store is down")
        self.inner.insert(*args, **kwargs)


async def committed(settings: Settings, topic: str) -> int:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=f"{settings.topic_prefix}store-writer"
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        total = 0
        for p in parts:
            total += await consumer.committed(TopicPartition(topic, p)) or 0
        return total
    finally:
        await consumer.stop()


def test_writer_on_kafka_stores_each_record_once_and_commits_after(settings: Settings, store: Store):
    settings = settings.model_copy(update={"store_batch_rows": 40, "store_batch_wait_ms": 50})
    items = [metrics(camera=f"cam-{i % 3}", seq=i, at=NOW + i * 0.2) for i in range(150)]
    bad = json.loads(encode_record(metrics(seq=999, at=NOW)))
    bad["detections"] = 70_000

    async def main():
        await create_topics(settings)
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        await producer.start()
        for m in items:
            await producer.send(settings.topic("metrics"), encode_record(m), key=m.camera_id.encode())
        await producer.send(settings.topic("metrics"), json.dumps(bad).encode(), key=b"cam-0")
        await producer.flush()
        await producer.stop()
        writer = StoreWriter(settings, DownThenUp(store, failures=2), LIMITS)
        stop = asyncio.Event()
        task = asyncio.create_task(writer.run(stop))
        for _ in range(600):
            if task.done():
                break
            if await committed(settings, settings.topic("metrics")) == len(items) + 1:
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, 30)
        dead = AIOKafkaConsumer(settings.topic("deadletters"), bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest")  # fmt: skip
        await dead.start()
        got = await dead.getmany(timeout_ms=5000)
        await dead.stop()
        return writer, [decode_record(DeadLetter, r.value) for batch in got.values() for r in batch]

    writer, dead = asyncio.run(main())
    assert writer.failed_inserts == 2
    assert store.query("SELECT count(), uniqExact(frame_id) FROM frame_metrics") == [(150, 150)]
    assert store.query("SELECT sum(frames) FROM cameras") == [(150,)]
    assert [(d.reason, d.source_topic) for d in dead] == [("out_of_range", settings.topic("metrics"))]
