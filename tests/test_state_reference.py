"""A camera's reference view (the moved-camera check's) is saved apart from the rest of its state: once
when it is learned, not with every checkpoint, and a restarted worker gets it back instead of learning a
new one. Read from the changelog topics themselves, on a real broker and real workers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from core.settings import Settings
from core.topology import create_topics
from streams.gateway import publish
from tests.processes import cvops, wait_for

pytestmark = pytest.mark.integration


def records(settings: Settings, topic: str) -> list[tuple[bytes, object]]:
    """Every (key, JSON value) in ``topic``, from the beginning."""

    async def read() -> list:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
        )
        await consumer.start()
        try:
            out, empty = [], 0
            while empty < 3:  # three empty fetches of 300 ms in a row: the end
                got = await consumer.getmany(timeout_ms=300)
                empty = 0 if got else empty + 1
                out += [(r.key, json.loads(r.value)) for batch in got.values() for r in batch]
            return out
        finally:
            await consumer.stop()

    return asyncio.run(read())


def test_the_reference_view_is_saved_once_and_a_restarted_worker_gets_it_back(settings: Settings, tmp_path: Path):
    # The check on every frame, and a checkpoint every 5 frames: many state writes, one view.
    s = settings.model_copy(update={"worker_id": "worker-a", "monitor_motion_every": 1, "state_checkpoint_frames": 5})
    asyncio.run(create_topics(s))
    health, reference = f"{s.app_id}-camera-health-changelog", f"{s.app_id}-camera-reference-changelog"
    predictions = s.topic("predictions")

    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    for n, log in enumerate(logs, start=1):
        with cvops(s, "worker", log) as worker:
            asyncio.run(publish(s, cameras=1, max_frames=20, fps=10_000.0))
            wait_for(lambda n=n: len(records(s, predictions)) >= 20 * n, f"{20 * n} predictions", [(worker, log)])
        states = [v for k, v in records(s, health) if k == b"cam-1"]
        views = [v for k, v in records(s, reference) if k == b"cam-1"]
        assert len(views) == 1, f"after worker {n}: {len(views)} reference views saved"
        assert isinstance(views[0], str) and len(views[0]) > 1000  # a base64 PNG
        assert len(states) >= 2 * n  # each worker saves the state more than once: checkpoints every 5 frames
        assert all(st["reference_elsewhere"] and st["moved"]["reference_png"] is None for st in states)
    assert "reference view was not found" not in logs[1].read_text()
