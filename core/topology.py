"""The topology in one place: every topic cvops uses, its partitions, retention and contract.

Topics are created explicitly (:func:`create_topics`); nothing relies on a broker's auto-creation,
which on some brokers makes one-partition topics. The topics of a frame's records are keyed by camera id, so
one camera's frames, predictions, metrics and alerts share a partition number and stay in order.
``docs/topics.md`` is generated from :func:`topology` and the contracts (``python -m cli.reference``).
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
    """One topic: its name (without the configured prefix), the contract of its values, partitions,
    retention and what it is for. Readers and writers go through :meth:`decode` and :meth:`encode`.

    >>> alerts = spec(Settings(_env_file=None), "alerts")
    >>> alerts.label, alerts.decode(alerts.encode(contracts.Feedback(frame_id="f", camera_id="c", objects=[])))
    Traceback (most recent call last):
    ...
    TypeError: the alerts topic carries Alert records, not Feedback
    """

    name: str
    contract: type[contracts._Record] | None  # None: not a record (a state of the processor that owns it)
    partitions: int
    retention_ms: int  # -1: kept (compacted topics)
    about: str
    max_message_bytes: int = 1024 * 1024
    compact: bool = False  # keep the last record per key (and drop tombstones) instead of expiring by time
    key: str = "camera id"

    @property
    def label(self) -> str:
        """The contract as people read it: ``Alert v1``, ``FrameHeader v1 + image``."""
        if self.contract is None:
            return "state (JSON)"
        if self.contract is contracts.FrameHeader:
            return f"FrameHeader v{contracts.FRAME_SCHEMA_VERSION} + image"
        return f"{self.contract.__name__} v{contracts.RECORD_SCHEMA_VERSION}"

    def decode(self, value: bytes | None):
        """The record a value of this topic holds; :class:`contracts.ContractError` for anything else (a frame
        comes back as its header and image: :func:`contracts.unpack_frame`)."""
        if self.contract is contracts.FrameHeader:
            return contracts.unpack_frame(value)
        if self.contract is None:
            raise TypeError(f"the {self.name} topic holds no record contract")
        return contracts.decode_record(self.contract, value)

    def encode(self, record: contracts._Record) -> bytes:
        if self.contract is None or self.contract is contracts.FrameHeader or not isinstance(record, self.contract):
            wanted = self.contract.__name__ if self.contract is not None else "no"
            raise TypeError(f"the {self.name} topic carries {wanted} records, not {type(record).__name__}")
        return contracts.encode_record(record)


def topology(settings: Settings) -> list[TopicSpec]:
    """Every topic, in the order a frame's records flow."""
    n = settings.frames_partitions
    rec = settings.records_retention_ms
    week = 7 * 24 * 3600_000
    c = contracts
    return [
        TopicSpec("frames", c.FrameHeader, n, settings.frames_retention_ms, "captured frames, from gateways",
                  settings.max_message_bytes),
        TopicSpec("predictions", c.Prediction, n, rec, "the model's detections, one per decoded frame"),
        TopicSpec("metrics", c.FrameMetrics, n, rec, "image signals and drift statistics, one per decoded frame"),
        TopicSpec("alerts", c.Alert, n, week, "raises, resolves and symptoms of a camera's detectors"),
        TopicSpec("evidence", c.Evidence, n, week, "thumbnails of the frames that prove each raised alert"),
        TopicSpec("views", c.CameraView, n, 3600_000, "each camera's latest view and its reference view"),
        TopicSpec("feedback", c.Feedback, n, week, "labels for frames, from people or a better model"),
        TopicSpec("config", c.CameraConfig, 1, -1, "fleet and per-camera monitor settings", compact=True,
                  key="scope: fleet or a camera id"),
        TopicSpec("deadletters", c.DeadLetter, n, week, "records no contract accepts, with the reason",
                  settings.max_message_bytes * 2, key="the original record's key"),
        TopicSpec("workers", c.WorkerStatus, 1, 3600_000, "each stream worker's status, every 10 s", key="worker id"),
        TopicSpec("cameras", c.CameraInfo, 1, -1, "the inventory: each camera's site, tags and gateway",
                  compact=True, key="source:camera id"),
        TopicSpec("incidents", c.IncidentRecord, n, 30 * 24 * 3600_000, "incidents across cameras",
                  key="incident id"),
        TopicSpec("incidents-state", None, 1, -1, "the incidents processor's state and the offsets it covers",
                  compact=True, key="offsets, incident:<id> or pending:<alert id>"),
        TopicSpec("acknowledgements", c.Acknowledgement, 1, -1, "who acknowledged or silenced an incident or a "
                  "camera, and until when", compact=True, key="action:target:id"),
    ]  # fmt: skip


def spec(settings: Settings, name: str) -> TopicSpec:
    """The topic called ``name`` (without the prefix); ``KeyError`` for a topic cvops does not have."""
    for t in topology(settings):
        if t.name == name:
            return t
    raise KeyError(f"no topic {name!r} in the topology")


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
