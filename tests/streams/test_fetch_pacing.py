"""Holding a consumer's fetches (streams.devbroker.fetch_pacing.hold) on a real broker: nothing more is fetched while
its process is busy, and fetching resumes once it is not, or once the hold has lasted its longest."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.consumer.fetcher import Fetcher

from core.settings import Settings
from core.topology import create_topics
from streams.devbroker import fetch_pacing


@pytest.fixture
def pacing():
    """fetch_pacing installed (no empty-fetch pause: the hold alone), and aiokafka as it was afterwards."""
    before = Fetcher._proc_fetch_request
    fetch_pacing.install(0)
    yield
    Fetcher._proc_fetch_request = before


async def _until(consumer: AIOKafkaConsumer, value: bytes, timeout_s: float = 30.0) -> list[bytes]:
    seen: list[bytes] = []
    deadline = asyncio.get_running_loop().time() + timeout_s
    while value not in seen:
        assert asyncio.get_running_loop().time() < deadline, f"{value!r} not fetched; got {seen}"
        for records in (await consumer.getmany(timeout_ms=200)).values():
            seen += [r.value for r in records]
    return seen


async def _held_scenario(settings: Settings, most_ms: float, release: bool) -> tuple[list, list, list]:
    """'first' is fetched, then the consumer is busy; 'second' is published. Returns what was fetched
    before being busy, during a 1.5 s look while busy, and after (released or not)."""
    topic = settings.topic("frames")
    tp = TopicPartition(topic, 0)
    await create_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await producer.start()
    await consumer.start()
    try:
        await producer.send_and_wait(topic, b"first", partition=0)
        # Busy from the start: the fetch that brings 'first' (the first fetch: the position is found by
        # another request) holds the next one back, and a node is sent one fetch at a time.
        busy = [True]
        fetch_pacing.hold(consumer, lambda: busy[0], most_ms=most_ms)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        before = await _until(consumer, b"first")
        await producer.send_and_wait(topic, b"second", partition=0)
        during = [r.value for records in (await consumer.getmany(timeout_ms=1500)).values() for r in records]
        if release:
            busy[0] = False
        after = await _until(consumer, b"second")
    finally:
        await consumer.stop()
        await producer.stop()
    return before, during, after


@pytest.mark.integration
def test_a_held_consumer_fetches_nothing_more_until_its_process_is_no_longer_busy(settings: Settings, pacing):
    before, during, after = asyncio.run(_held_scenario(settings, most_ms=600_000, release=True))
    assert before == [b"first"]
    assert during == []  # published, and not fetched while busy
    assert after == [b"second"]


@pytest.mark.integration
def test_a_hold_ends_after_its_longest_even_while_busy(settings: Settings, pacing):
    before, _, after = asyncio.run(_held_scenario(settings, most_ms=2000, release=False))
    assert before == [b"first"]
    assert after == [b"second"]  # fetched once the hold had lasted 2 s, though still busy


def test_a_hold_on_a_consumer_not_started_does_nothing():
    not_started = SimpleNamespace(_fetcher=None)  # aiokafka makes the fetcher at start()
    fetch_pacing.hold(not_started, lambda: True, most_ms=1000)
    fetch_pacing.hold(SimpleNamespace(), lambda: True, most_ms=1000)  # no fetcher at all: no error either
    assert vars(not_started) == {"_fetcher": None}
