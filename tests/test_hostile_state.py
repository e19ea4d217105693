"""Hostile records on a camera's state changelog, on a real broker and a real worker: a record that is not
JSON, and one that carries a pickle where detector state used to be pickled. The worker recovers its table
from that changelog, learns the cameras' references again, processes their frames, and never runs the
pickle."""

from __future__ import annotations

import asyncio
import base64
import json
import pickle
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from core.settings import Settings
from core.topology import create_topics
from streams.gateway import publish
from tests.processes import cvops, wait_for
from tests.test_state_reference import records

pytestmark = pytest.mark.integration


class _WritesAFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_hostile_changelog_records_are_learned_again_and_never_run(settings: Settings, tmp_path: Path):
    s = settings.model_copy(update={"worker_id": "worker-a"})
    asyncio.run(create_topics(s))
    marker = tmp_path / "ran"
    hostile = {
        "kind": "camera",
        "version": 1,
        "camera_id": "cam-2",
        "concept": {"adwin": {"kind": "adwin", "version": 1, "state": base64.b64encode(
            pickle.dumps(_WritesAFile(marker))).decode()}},
    }  # fmt: skip

    async def write_changelog() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            topic = f"{s.app_id}-camera-health-changelog"
            for key, value in ((b"cam-1", b"\x80\x04 not JSON at all"), (b"cam-2", json.dumps(hostile).encode())):
                await producer.send_and_wait(topic, value, key=key)  # the default partitioner, as the table's
        finally:
            await producer.stop()

    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    with cvops(s, "worker", logs[0]) as worker:  # creates the changelog topics, and saves good states
        asyncio.run(publish(s, cameras=2, max_frames=5, fps=10_000.0))
        wait_for(lambda: len(records(s, s.topic("predictions"))) >= 10, "10 predictions", [(worker, logs[0])])
    asyncio.run(write_changelog())  # the newest state of each camera is now hostile
    with cvops(s, "worker", logs[1]) as worker:
        asyncio.run(publish(s, cameras=2, max_frames=10, fps=10_000.0))
        wait_for(lambda: len(records(s, s.topic("predictions"))) >= 30, "20 more predictions", [(worker, logs[1])])
        assert worker.poll() is None
    assert not marker.exists()
    text = logs[1].read_text()
    assert "camera cam-2: its saved state cannot be read" in text
