"""Deleting processed frames: which offsets (pure), and on a real broker that nothing past the group's
committed offset is deleted."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata

from core.settings import Settings
from core.topology import create_topics
from streams.devbroker.purge import FramesPurge, to_purge


def test_only_partitions_whose_commit_moved_past_the_last_purge_are_purged():
    assert to_purge({0: 10, 1: 10, 2: 10}, {0: 10, 1: 4}) == {1: 10, 2: 10}
    assert to_purge({0: 3}, {0: 8}) == {}  # committed behind what was deleted (a reset group): nothing
    assert to_purge({0: -1, 1: 0}, {}) == {}  # nothing committed yet, or committed at the start
    assert to_purge({}, {0: 5}) == {}


def test_the_purge_interval_may_be_zero_but_not_negative():
    assert Settings(_env_file=None, frames_purge_every_s=0).frames_purge_every_s == 0
    with pytest.raises(ValueError):
        Settings(_env_file=None, frames_purge_every_s=-1)


@pytest.mark.integration
def test_the_purge_deletes_what_the_group_committed_and_nothing_after(settings: Settings):
    topic = settings.topic("frames")
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)

    async def scenario() -> tuple[dict, dict, dict]:
        await create_topics(settings)
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for i in range(10):
                await producer.send_and_wait(topic, b"frame %d" % i, partition=0)
                await producer.send_and_wait(topic, b"frame %d" % i, partition=1)
        finally:
            await producer.stop()
        # The worker group has processed 6 frames of partition 0 and none of partition 1.
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap, group_id=settings.app_id, enable_auto_commit=False
        )
        await consumer.start()
        consumer.assign([tp0, tp1])
        await consumer.commit({tp0: OffsetAndMetadata(6, "")})
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        await admin.start()
        try:
            purge = FramesPurge(settings, lambda: [0, 1])
            first = await purge.purge(admin)
            again = await purge.purge(admin)  # nothing new committed: nothing to do
            starts = await consumer.beginning_offsets([tp0, tp1])
        finally:
            await admin.close()
            await consumer.stop()
        return first, again, starts

    first, again, starts = asyncio.run(scenario())
    assert first == {0: 6}
    assert again == {}
    assert starts == {tp0: 6, tp1: 0}  # frames 6-9 of partition 0 and all of partition 1 are still there


def test_a_broker_that_refuses_deletes_is_told_once_and_not_asked_again(caplog):
    from aiokafka.errors import TopicAuthorizationFailedError

    class Refusing:  # an admin client of a cluster whose ACLs do not allow DELETE on the topic
        calls = 0

        async def list_consumer_group_offsets(self, group, partitions):
            return {tp: OffsetAndMetadata(10, "") for tp in partitions}

        async def delete_records(self, records):
            Refusing.calls += 1
            raise TopicAuthorizationFailedError()

    purge = FramesPurge(Settings(_env_file=None), lambda: [0, 1])
    assert asyncio.run(purge.purge(Refusing())) == {}
    assert asyncio.run(purge.purge(Refusing())) == {}
    assert Refusing.calls == 1
    assert "CVOPS_FRAMES_PURGE_EVERY_S=0" in caplog.text
