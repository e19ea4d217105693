"""The topology in one place: every topic cvops uses, its partitions, retention and contract.

Topics are created explicitly (:func:`create_topics`); nothing relies on a broker's auto-creation,
which on some brokers makes one-partition topics. All topics are keyed by camera id, so one camera's
frames, predictions, metrics and alerts share a partition number and stay in order.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from core import contracts
from core.kafka import client_options
from core.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str  # without the configured prefix
    contract: str
    partitions: int
    retention_ms: int
    max_message_bytes: int = 1024 * 1024
    compact: bool = False  # keep the last record per key (and drop tombstones) instead of expiring by time


def topology(settings: Settings) -> list[TopicSpec]:
    n = settings.frames_partitions
    rec = settings.records_retention_ms
    return [
        TopicSpec(
            "frames",
            f"FrameHeader v{contracts.FRAME_SCHEMA_VERSION} + image",
            n,
            settings.frames_retention_ms,
            settings.max_message_bytes,
        ),
        TopicSpec("predictions", "Prediction v1", n, rec),
        TopicSpec("metrics", "FrameMetrics v1", n, rec),
        TopicSpec("alerts", "Alert v1", n, 7 * 24 * 3600_000),
        TopicSpec("evidence", "Evidence v1", n, 7 * 24 * 3600_000),
        TopicSpec("views", "CameraView v1", n, 3600_000),
        TopicSpec("feedback", "Feedback v1", n, 7 * 24 * 3600_000),
        TopicSpec("config", "CameraConfig v1 (compacted)", 1, -1, compact=True),
        TopicSpec("deadletters", "DeadLetter v1", n, 7 * 24 * 3600_000, settings.max_message_bytes * 2),
        TopicSpec("workers", "WorkerStatus v1", 1, 3600_000),
        TopicSpec("cameras", "CameraInfo v1 (compacted)", 1, -1, compact=True),
        TopicSpec("incidents", "IncidentRecord v1", n, 30 * 24 * 3600_000),
        TopicSpec("incidents-state", "the incident correlator's state and offsets (compacted)", 1, -1, compact=True),
    ]


def admin_client(settings: Settings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=10_000)


async def wait_for_broker(settings: Settings, timeout_s: float = 60.0) -> None:
    """Return once the broker answers metadata requests; raise a clear error after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        admin = admin_client(settings)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except KafkaConnectionError as exc:
            if loop.time() > deadline:
                raise RuntimeError(
                    f"no Kafka broker answers at {settings.kafka_bootstrap} (CVOPS_KAFKA_BOOTSTRAP): {exc}"
                ) from None
            await asyncio.sleep(0.5)
        finally:
            await admin.close()


async def create_topics(settings: Settings) -> list[str]:
    """Create every topic that does not exist yet; return the names created. Idempotent."""
    await wait_for_broker(settings)
    admin = admin_client(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                settings.topic(t.name),
                t.partitions,
                settings.replication_factor,
                topic_configs={"cleanup.policy": "compact", "max.message.bytes": str(t.max_message_bytes)}
                if t.compact
                else {
                    "retention.ms": str(t.retention_ms),
                    # Retention drops whole segments and never the open one: roll segments often enough
                    # that old data can go (a 7-day default segment would keep a 1-minute topic for a week).
                    "segment.ms": str(max(1000, t.retention_ms // 4)),
                    "max.message.bytes": str(t.max_message_bytes),
                },
            )
            for t in topology(settings)
            if settings.topic(t.name) not in existing
        ]
        created = []
        for topic in wanted:
            try:
                await admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        if created:
            log.info("created topics: %s", ", ".join(created))
        return created
    finally:
        await admin.close()
