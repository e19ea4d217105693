"""The stall decision (pure), and the watch's offsets and stall on a real broker."""

from __future__ import annotations

import asyncio
import doctest
import subprocess
import sys
import textwrap

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from core.settings import Settings
from core.topology import create_topics
from streams import liveness
from streams.liveness import EXIT_STALLED, LivenessWatch, Offsets, Stalled, StallWatch, describe, take_stall_file


def test_the_module_examples_hold():
    assert doctest.testmod(liveness).failed == 0


def test_an_idle_worker_never_stalls():
    watch = StallWatch(stall_s=120)
    for t in range(0, 3600, 30):  # an hour with nothing waiting: all committed, or nothing ever sent
        assert watch.update({0: Offsets(500, 0, 500), 1: Offsets(None, 0, 0), 2: Offsets(None, 40, 40)}, t) == []


def test_a_slow_worker_that_commits_never_stalls():
    watch = StallWatch(stall_s=120)
    for i, t in enumerate(range(0, 3600, 30)):  # far behind, but one frame committed every round
        assert watch.update({0: Offsets(i, 0, 100_000)}, t) == []


def test_frames_waiting_with_no_commit_for_the_stall_time_is_a_stall():
    watch = StallWatch(stall_s=120)
    assert watch.update({0: Offsets(10, 0, 50), 1: Offsets(7, 0, 9)}, 0) == []
    assert watch.update({0: Offsets(10, 0, 80), 1: Offsets(8, 0, 9)}, 60) == []
    assert watch.update({0: Offsets(10, 0, 90), 1: Offsets(8, 0, 9)}, 119) == []
    # Partition 1 moved at 60 s: only partition 0 has waited 120 s without progress.
    assert watch.update({0: Offsets(10, 0, 95), 1: Offsets(8, 0, 9)}, 120) == [Stalled(0, 10, 95, 120)]
    assert watch.update({0: Offsets(10, 0, 95), 1: Offsets(8, 0, 9)}, 180) == [
        Stalled(0, 10, 95, 180),
        Stalled(1, 8, 9, 120),
    ]


def test_nothing_ever_committed_with_frames_waiting_stalls_too():
    watch = StallWatch(stall_s=120)
    watch.update({0: Offsets(None, 0, 20)}, 0)
    watch.update({0: Offsets(None, 0, 20)}, 60)
    assert watch.update({0: Offsets(None, 0, 25)}, 120) == [Stalled(0, None, 25, 120)]


def test_the_clock_starts_when_frames_start_waiting_not_at_the_last_commit():
    watch = StallWatch(stall_s=120)
    for t in range(0, 600, 30):  # idle for ten minutes: its last commit long ago
        watch.update({0: Offsets(40, 0, 40)}, t)
    # Frames arrive after the read at 570, the last that saw nothing waiting: the clock runs from there.
    assert watch.update({0: Offsets(40, 0, 41)}, 600) == []
    assert watch.update({0: Offsets(40, 0, 45)}, 660) == []
    assert watch.update({0: Offsets(40, 0, 50)}, 690) == [Stalled(0, 40, 50, 120)]


def test_frames_deleted_by_retention_are_not_progress():
    watch = StallWatch(stall_s=120)
    watch.update({0: Offsets(10, 0, 100)}, 0)
    watch.update({0: Offsets(10, 50, 120)}, 60)  # the first segments expired unprocessed: still stuck at 10
    assert watch.update({0: Offsets(10, 90, 130)}, 120) == [Stalled(0, 10, 130, 120)]
    # Every waiting frame expired: nothing waits any more.
    assert StallWatch(120).update({0: Offsets(10, 130, 130)}, 0) == []
    assert Offsets(10, 130, 130).waiting is False and Offsets(10, 90, 130).waiting is True


def test_a_rebalance_a_new_partition_or_a_gap_between_reads_starts_the_clocks_again():
    watch = StallWatch(stall_s=120)
    watch.update({0: Offsets(10, 0, 50)}, 0)
    watch.update({0: Offsets(10, 0, 50)}, 60)
    watch.forget()  # rebalancing
    assert watch.update({0: Offsets(10, 0, 50)}, 120) == []
    watch.update({0: Offsets(10, 0, 50)}, 180)
    watch.update({1: Offsets(10, 0, 50)}, 200)  # partition 0 moved away, 1 came
    assert watch.update({0: Offsets(10, 0, 50), 1: Offsets(10, 0, 50)}, 250) == []
    gap = StallWatch(stall_s=120)
    gap.update({0: Offsets(10, 0, 50)}, 0)
    assert gap.update({0: Offsets(10, 0, 50)}, 200) == []  # the broker away 200 s: not judged on that
    assert gap.update({0: Offsets(10, 0, 50)}, 260) == []
    assert gap.update({0: Offsets(10, 0, 50)}, 320) == [Stalled(0, 10, 50, 120)]


def test_the_log_line_names_partitions_positions_and_ends():
    assert describe([Stalled(3, 120, 340, 130.0), Stalled(5, None, 8, 130.0)]) == (
        "partition 3 committed 120, end 340; partition 5 committed nothing, end 8"
    )


def test_the_stall_time_is_zero_or_at_least_ten_seconds():
    assert Settings(_env_file=None).worker_stall_s == 120
    assert Settings(_env_file=None, worker_stall_s=0).worker_stall_s == 0
    assert Settings(_env_file=None, worker_stall_s=10).worker_stall_s == 10
    for bad in (5, -1):
        with pytest.raises(ValueError):
            Settings(_env_file=None, worker_stall_s=bad)


def test_the_stall_file_hook_fires_once(tmp_path):
    path = tmp_path / "stall"
    assert take_stall_file(str(path)) is False
    path.touch()
    assert take_stall_file(str(path)) is True
    assert not path.exists() and take_stall_file(str(path)) is False


def test_a_process_that_does_not_stop_after_a_stall_is_ended_with_the_stall_status():
    code = textwrap.dedent(
        """
        import threading, time
        from streams import liveness
        stalled = threading.Event()
        liveness.exit_if_still_running(stalled, grace_s=0.5)
        threading.Thread(target=time.sleep, args=(3600,)).start()  # a hung thread that a normal exit waits for
        stalled.set()
        """
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == EXIT_STALLED


@pytest.mark.integration
def test_the_watch_reads_the_groups_offsets_and_stops_for_a_stalled_partition_only(settings: Settings):
    s = settings.model_copy(update={"worker_stall_s": 10.0})
    topic = s.topic("frames")

    async def scenario():
        await create_topics(s)
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for i in range(10):
                await producer.send_and_wait(topic, b"frame %d" % i, partition=0)
            for i in range(4):
                await producer.send_and_wait(topic, b"frame %d" % i, partition=1)
        finally:
            await producer.stop()
        # Partition 1 is done (all 4 committed), partition 0 has 6 of 10 committed, partition 2 is empty.
        consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap, group_id=s.app_id, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic, p) for p in (0, 1)])
            await consumer.commit(
                {TopicPartition(topic, 0): OffsetAndMetadata(6, ""), TopicPartition(topic, 1): OffsetAndMetadata(4, "")}
            )
        finally:
            await consumer.stop()
        stalls: list[list[Stalled]] = []

        async def on_stall(stalled):
            stalls.append(stalled)

        watch = LivenessWatch(s, lambda: [0, 1, 2], on_stall)
        await asyncio.wait_for(watch.run(), timeout=120)  # returns once it has found a stall
        return stalls

    stalls = asyncio.run(scenario())
    assert len(stalls) == 1
    [stalled] = stalls[0:1]
    assert [(x.partition, x.committed, x.end) for x in stalled] == [(0, 6, 10)]
    assert stalled[0].for_s >= 10
