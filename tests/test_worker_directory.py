"""The worker directory (core.directory) on the real broker: the latest status of each worker, who is alive, a
record that is no status skipped, and the ``started`` hook through which the command line hands in the
development broker's pacing (the directory itself imports nothing of the worker's)."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from core.contracts import WorkerStatus, encode_record
from core.directory import WorkerDirectory
from core.settings import Settings
from core.topology import create_topics


def status(worker_id: str, sent_at: float, frames_per_s: float = 10.0) -> WorkerStatus:
    return WorkerStatus(
        worker_id=worker_id, model_name="m", model_version="1", providers=[], batch_max_size=8, partitions=[0],
        frames_per_s=frames_per_s, mean_batch=4.0, dead_letters=0, alerts=0, sent_at=sent_at,
    )  # fmt: skip


def test_directory_keeps_the_latest_status_of_each_worker_and_hands_its_consumer_to_started(settings: Settings):
    now = time.time()
    sent = [
        (b"w-old", encode_record(status("w-old", now - 3600))),
        (b"w-new", encode_record(status("w-new", now - 20, frames_per_s=1.0))),
        (b"w-new", b"{not a status"),
        (b"w-new", encode_record(status("w-new", now, frames_per_s=2.0))),
    ]
    started: list[AIOKafkaConsumer] = []

    async def main() -> WorkerDirectory:
        await create_topics(settings)
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for key, value in sent:
                await producer.send_and_wait(settings.topic("workers"), value, key=key, partition=0)
        finally:
            await producer.stop()
        directory, stop = WorkerDirectory(settings, started=started.append), asyncio.Event()
        task = asyncio.create_task(directory.run(stop))
        while directory.latest.get("w-new", status("w-new", 0)).frames_per_s != 2.0:  # the last record is read
            assert not task.done(), task
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 30)
        return directory

    directory = asyncio.run(asyncio.wait_for(main(), 60))
    assert len(started) == 1 and isinstance(started[0], AIOKafkaConsumer)
    assert set(directory.latest) == {"w-old", "w-new"}
    assert [w.worker_id for w in directory.alive()] == ["w-new"]
    assert directory.skipped.total == 1
