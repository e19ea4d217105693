"""The live alert feed: one background consumer of the alerts topic, fanned out to every SSE subscriber.

One consumer for the whole process (not one per subscriber) keeps the broker's load flat however many
dashboards are open. It joins no consumer group and starts at the end of each partition: live alerts only.
Each subscriber has a bounded queue; when a slow one's queue is full its oldest alert is dropped and
counted, so one stuck client can neither block the others nor grow memory. Streams are capped in all
(``max_subscribers``) and per client address (:meth:`AlertFeed.open_by`), so that one client cannot take
them all.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from core.contracts import Alert, ContractError, decode_record
from core.kafka import client_options
from core.settings import Settings
from core.skips import SkipLog

log = logging.getLogger("cvops.api")

Event = tuple[str, Alert]  # (partition:offset, alert)


@dataclass(eq=False)
class Subscription:
    queue: asyncio.Queue[Event]
    camera_id: str | None = None
    client: str | None = None
    dropped: int = field(default=0)

    def offer(self, event: Event) -> None:
        """Queue ``event``; when full, drop the oldest queued one and count it."""
        if self.camera_id is not None and event[1].camera_id != self.camera_id:
            return
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(event)


class AlertFeed:
    """Reads the alerts topic from its end and offers each alert to every subscription."""

    def __init__(self, settings: Settings, queue_size: int = 256, max_subscribers: int = 100):
        self.settings = settings
        self.queue_size = queue_size
        self.max_subscribers = max_subscribers
        self.subscriptions: set[Subscription] = set()
        self._by_client: Counter[str | None] = Counter()
        self.ready = asyncio.Event()  # set once the consumer holds a position on every partition
        self.skips = SkipLog(log)  # bad alerts: one line a minute at most, not one each

    def subscribe(self, camera_id: str | None = None, client: str | None = None) -> Subscription | None:
        """A new subscription (alerts of one camera, or all) of ``client`` (its address), or None when
        ``max_subscribers`` are open.

        >>> feed = AlertFeed(None, max_subscribers=2)
        >>> a, b = feed.subscribe(client="10.0.0.1"), feed.subscribe(client="10.0.0.2")
        >>> feed.subscribe() is None, feed.open_by("10.0.0.1")
        (True, 1)
        """
        if len(self.subscriptions) >= self.max_subscribers:
            return None
        subscription = Subscription(asyncio.Queue(self.queue_size), camera_id, client)
        self.subscriptions.add(subscription)
        self._by_client[client] += 1
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self.subscriptions:
            self.subscriptions.discard(subscription)
            self._by_client[subscription.client] -= 1
            if not self._by_client[subscription.client]:
                del self._by_client[subscription.client]

    def open_by(self, client: str | None) -> int:
        """How many streams ``client`` has open."""
        return self._by_client[client]

    def publish(self, event: Event) -> None:
        for subscription in list(self.subscriptions):
            subscription.offer(event)

    async def run(self, stop: asyncio.Event) -> None:
        topic = self.settings.topic("alerts")
        consumer = AIOKafkaConsumer(**client_options(self.settings), group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                raise RuntimeError(f"topic {topic} does not exist (cvops topics creates it)")
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:
                await consumer.position(tp)  # resolve "the end" now, so what is published from here on is seen
            self.ready.set()
            while not stop.is_set():
                for batch in (await consumer.getmany(timeout_ms=1000)).values():
                    for record in batch:
                        try:
                            alert = decode_record(Alert, record.value)
                        except ContractError as exc:
                            self.skips.skip(record, exc)  # the store writer dead-letters it
                            continue
                        self.publish((f"{record.partition}:{record.offset}", alert))
        finally:
            self.ready.clear()
            await consumer.stop()
