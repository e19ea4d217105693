"""The live alert feed: one background consumer of the alerts topic, fanned out to every SSE subscriber.

One consumer for the whole process (not one per subscriber) keeps the broker's load flat however many
dashboards are open. It joins no consumer group and starts at the end of each partition: live alerts only.
Each subscriber has a bounded queue; when a slow one's queue is full its oldest alert is dropped and
counted, so one stuck client can neither block the others nor grow memory.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from streams.config import Settings
from streams.contracts import Alert, ContractError, decode_record
from streams.kafka_security import client_options

log = logging.getLogger("cvops.api")

Event = tuple[str, Alert]  # (partition:offset, alert)


@dataclass(eq=False)
class Subscription:
    queue: asyncio.Queue[Event]
    camera_id: str | None = None
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
        self.ready = asyncio.Event()  # set once the consumer holds a position on every partition

    def subscribe(self, camera_id: str | None = None) -> Subscription | None:
        """A new subscription (alerts of one camera, or all), or None when ``max_subscribers`` are open."""
        if len(self.subscriptions) >= self.max_subscribers:
            return None
        subscription = Subscription(asyncio.Queue(self.queue_size), camera_id)
        self.subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscriptions.discard(subscription)

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
                            log.warning("live feed: ignoring a bad alert at offset %d: %s", record.offset, exc)
                            continue
                        self.publish((f"{record.partition}:{record.offset}", alert))
        finally:
            self.ready.clear()
            await consumer.stop()
