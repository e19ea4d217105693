"""A settings change reaches a running worker through the config topic, without a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from core.contracts import CameraConfig, MonitorOverrides, WorkerStatus, encode_record
from core.settings import Settings
from core.topology import create_topics
from tests.processes import cvops
from tests.test_feedback import read_until

pytestmark = pytest.mark.integration


async def send(settings: Settings, record: CameraConfig) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic("config"), encode_record(record), key=record.scope.encode())
    finally:
        await producer.stop()


def test_a_running_worker_applies_a_config_record(settings: Settings, tmp_path: Path):
    asyncio.run(create_topics(settings))
    before = CameraConfig(scope="fleet", overrides=MonitorOverrides(expected_fps=7.0), updated_at=1000.0)
    asyncio.run(send(settings, before))  # present before the worker starts: read at start
    log = tmp_path / "worker.log"
    with cvops(settings, "worker", log):
        first = asyncio.run(
            read_until(settings, "workers", WorkerStatus, lambda rs: any(s.config_updated_at == 1000.0 for s in rs))
        )
        assert any(s.config_updated_at == 1000.0 for s in first), log.read_text()[-3000:]
        after = CameraConfig(scope="cam-1", overrides=MonitorOverrides(rule_consecutive=9), updated_at=2000.0)
        asyncio.run(send(settings, after))  # while it runs
        statuses = asyncio.run(
            read_until(settings, "workers", WorkerStatus, lambda rs: any(s.config_updated_at == 2000.0 for s in rs))
        )
    assert any(s.config_updated_at == 2000.0 for s in statuses), log.read_text()[-3000:]
    text = log.read_text()
    assert "config fleet {'expected_fps': 7.0}" in text and "config cam-1 {'rule_consecutive': 9}" in text
