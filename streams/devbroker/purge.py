"""Delete the frames the worker group has finished with, instead of keeping them until retention.

Applies to: the embedded broker, noida-db 0.2.3, under the ``embedded`` broker profile (:mod:`streams.devbroker`);
against Kafka, retention deletes the frames.

Raw frames are nearly all of the broker's bytes, and once the worker group has committed past a frame
nothing in cvops reads it again: its outputs were durable before the commit (docs/delivery.md). So each
worker, every ``CVOPS_FRAMES_PURGE_EVERY_S``, asks the broker for the group's committed offsets of the
frames partitions it holds and deletes the records before them (Kafka's DeleteRecords, which Kafka Streams
uses the same way for its repartition topics). Frames nobody processed still wait up to
``CVOPS_FRAMES_RETENTION_MS``, so a worker that is down for a while loses nothing that retention would keep.

Why: the embedded development broker rewrites its whole state file about once a second while data
changes, so its CPU grows with the bytes it holds (docs/development-broker.md): holding 32 MB
of frames, it spent 40-47% of a core while small records trickled in (measured). Against Kafka the purge
would only free disk early, so it does not run there. Turn it off (0) if anything besides cvops' workers
reads the frames topic.

>>> to_purge(committed={0: 120, 1: 40, 2: -1}, purged={0: 100, 1: 40})
{0: 120}
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.records_to_delete import RecordsToDelete
from aiokafka.errors import PolicyViolationError, TopicAuthorizationFailedError

from core.settings import Settings
from core.supervise import admin_rounds

log = logging.getLogger(__name__)


def to_purge(committed: Mapping[int, int], purged: Mapping[int, int]) -> dict[int, int]:
    """Partition -> offset to delete before, for the partitions whose committed offset moved past what was
    already deleted. ``-1`` (no offset committed yet) deletes nothing."""
    return {p: offset for p, offset in committed.items() if offset > purged.get(p, 0)}


class FramesPurge:
    """A worker's loop: every ``frames_purge_every_s``, delete the frames its group has committed past, in
    the frames partitions that ``assigned()`` (a callable: assignments change with rebalances) names."""

    def __init__(self, settings: Settings, assigned: Callable[[], Iterable[int]]):
        self.settings = settings
        self.assigned = assigned
        self.topic = settings.topic("frames")
        self.purged: dict[int, int] = {}  # partition -> offset deleted before, by this worker
        self.refused = False  # the broker refuses deletes here (permissions, policy): no more tries

    async def run(self) -> None:
        await admin_rounds(self.settings, self.settings.frames_purge_every_s, self.purge, "frames purge")

    async def purge(self, admin: AIOKafkaAdminClient) -> dict[int, int]:
        """One round; returns partition -> the offset deleted before."""
        partitions = [TopicPartition(self.topic, p) for p in sorted(self.assigned())]
        if not partitions or self.refused:
            return {}
        offsets = await admin.list_consumer_group_offsets(self.settings.app_id, partitions=partitions)
        committed = {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == self.topic}
        todo = to_purge(committed, self.purged)
        if not todo:
            return {}
        try:
            await admin.delete_records({TopicPartition(self.topic, p): RecordsToDelete(o) for p, o in todo.items()})
        except (TopicAuthorizationFailedError, PolicyViolationError) as exc:
            self.refused = True
            log.error(
                "the broker refuses to delete records from %s (%s): processed frames stay until retention; "
                "allow DELETE on the topic, or set CVOPS_FRAMES_PURGE_EVERY_S=0 to stop trying",
                self.topic,
                type(exc).__name__,
            )
            return {}
        if not self.purged:
            log.info("deleting processed frames from %s every %g s", self.topic, self.settings.frames_purge_every_s)
        self.purged.update(todo)
        log.debug("purged frames before %s", todo)
        return todo
