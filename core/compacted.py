"""Compacted topics read whole, then followed: the inventory (``cameras``) and the acknowledgements, for the API,
the worker and the notifier.

No consumer group: a reader reads every record of its topics from their start, in order, and hands each to
``apply``. :meth:`CompactedReader.catch_up` returns once every record written before it was called has been
applied, which is what a reader that must not act on stale data (the notifier, before it tells anyone) needs;
:meth:`CompactedReader.follow` applies records as they come. A record ``apply`` refuses is skipped and logged
with its offset (:class:`core.skips.SkipLog`): a compacted topic has no dead letters, and its writers (the API,
the gateway) refuse bad records already.

It lives in the core because both the API and the worker read these topics, and the API depends on the core
only. What the development broker needs of its consumer (slower fetches of these slow topics) is the caller's:
``started(consumer)`` is called once the consumer has started, as for :class:`core.fleetconfig.ConfigFollower`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from core.kafka import client_options
from core.settings import Settings
from core.skips import SkipLog

log = logging.getLogger(__name__)


class CompactedReader:
    """Reads ``topics`` (names without the prefix) from their start; ``apply(record)`` for each record;
    ``started(consumer)``, when given, once its consumer has started."""

    def __init__(
        self,
        settings: Settings,
        topics: list[str],
        apply: Callable[[ConsumerRecord], None],
        started: Callable[[AIOKafkaConsumer], None] | None = None,
    ):
        self.settings = settings
        self.topics = [settings.topic(t) for t in topics]
        self.apply = apply
        self.started = started
        self.skipped = SkipLog(log)
        self.consumer: AIOKafkaConsumer | None = None
        self.partitions: list[TopicPartition] = []

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(**client_options(self.settings), enable_auto_commit=False)
        await consumer.start()
        self.consumer = consumer
        if self.started is not None:
            self.started(consumer)
        while not all(consumer.partitions_for_topic(t) for t in self.topics):  # not created yet: ``cvops topics``
            await asyncio.sleep(1.0)
            await consumer.topics()  # a fresh metadata request
        self.partitions = [TopicPartition(t, p) for t in self.topics for p in sorted(consumer.partitions_for_topic(t))]
        consumer.assign(self.partitions)
        await consumer.seek_to_beginning(*self.partitions)

    async def catch_up(self) -> int:
        """Apply every record written before this call; return how many were read."""
        assert self.consumer is not None, "start() first"
        ends = await self.consumer.end_offsets(self.partitions)
        n = 0
        while behind := [tp for tp in self.partitions if await self.consumer.position(tp) < ends[tp]]:
            n += self._apply(await self.consumer.getmany(*behind, timeout_ms=1000))
        return n

    async def follow(self, stop: asyncio.Event, caught_up: asyncio.Event | None = None) -> None:
        """Read the topics whole (then set ``caught_up``, when given), then apply records as they come until
        ``stop``."""
        await self.start()
        try:
            await self.catch_up()
            if caught_up is not None:
                caught_up.set()
            while not stop.is_set():
                assert self.consumer is not None
                self._apply(await self.consumer.getmany(timeout_ms=1000))
        finally:
            await self.close()

    async def close(self) -> None:
        if self.consumer is not None:
            consumer, self.consumer = self.consumer, None
            await consumer.stop()

    def _apply(self, batch: dict) -> int:
        n = 0
        for records in batch.values():
            for record in records:
                n += 1
                try:
                    self.apply(record)
                except Exception as exc:  # ContractError, or anything else: that record is skipped
                    self.skipped.skip(record, exc)
        return n
