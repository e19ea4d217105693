"""Which stream workers are alive: the latest status of each, read from the workers topic.

Every worker publishes a :class:`~core.contracts.WorkerStatus` on the workers topic every 10 s.
:class:`WorkerDirectory` follows that topic (the API shows it; on the embedded development broker each worker
reads it too, for :mod:`streams.devbroker.peers`). A status that cannot be read is skipped and logged with its
offset (:class:`core.skips.SkipLog`); the directory goes on.

It lives in the core because both the API and the worker read it, and the API depends on the core only.
What the development broker needs of its consumer (slower fetches of this slow topic) is the caller's:
``started(consumer)`` is called once the consumer has started, as for :class:`core.fleetconfig.ConfigFollower`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer

from core.contracts import WorkerStatus, decode_record
from core.kafka import client_options
from core.settings import Settings
from core.skips import SkipLog

log = logging.getLogger(__name__)


class WorkerDirectory:
    """The latest status of every stream worker, read from the workers topic by :meth:`run`."""

    def __init__(self, settings: Settings, started: Callable[[AIOKafkaConsumer], None] | None = None):
        self.settings = settings
        self.started = started
        self.alive_s = settings.peer_timeout_s or 60.0
        self.latest: dict[str, WorkerStatus] = {}
        self.skipped = SkipLog(log)

    def alive(self) -> list[WorkerStatus]:
        now = time.time()
        return [w for w in self.latest.values() if now - w.sent_at < self.alive_s]

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Follow the workers topic from its start until ``stop`` is set (or the task is cancelled)."""
        topic = self.settings.topic("workers")
        consumer = AIOKafkaConsumer(topic, **client_options(self.settings), auto_offset_reset="earliest", group_id=None)
        await consumer.start()
        if self.started is not None:
            self.started(consumer)
        try:
            while stop is None or not stop.is_set():
                for batch in (await consumer.getmany(timeout_ms=1000)).values():
                    for record in batch:
                        try:
                            status = decode_record(WorkerStatus, record.value)
                        except Exception as exc:  # ContractError, or anything else: that record is skipped
                            self.skipped.skip(record, exc)
                            continue
                        self.latest[status.worker_id] = status
        finally:
            await consumer.stop()
