"""Which group members the live workers remove: pure logic, no broker (the takeover itself runs on a real
broker in tests/test_handover.py)."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from core.contracts import WorkerStatus
from core.settings import Settings
from core.supervise import keep_running
from streams.devbroker.peers import GroupMember, StaleMembers

A, B = GroupMember("m-a", "worker-a"), GroupMember("m-b", "worker-b")


def status(worker_id: str, sent_at: float, member_id: str = "") -> WorkerStatus:
    return WorkerStatus(
        worker_id=worker_id,
        model_name="nanodet-m",
        model_version="1",
        providers=["CPUExecutionProvider"],
        batch_max_size=8,
        partitions=[],
        frames_per_s=0.0,
        mean_batch=0.0,
        dead_letters=0,
        alerts=0,
        member_id=member_id,
        sent_at=sent_at,
    )


def test_a_static_member_whose_worker_stopped_reporting_is_stale_after_the_timeout():
    watch = StaleMembers(timeout_s=60)
    assert watch.update([A, B], [status("worker-a", 0), status("worker-b", 0)], now=0, me="m-a") == []
    # worker-b's last status was sent at t=0: still vouched for until t=60
    assert watch.update([A, B], [status("worker-a", 50), status("worker-b", 0)], now=59.9, me="m-a") == []
    assert watch.update([A, B], [status("worker-a", 60), status("worker-b", 0)], now=60, me="m-a") == [B]


def test_a_live_worker_is_never_stale():
    watch = StaleMembers(timeout_s=60)
    for t in range(0, 600, 10):
        assert watch.update([A, B], [status("worker-a", t), status("worker-b", t)], now=t + 5, me="m-a") == []


def test_the_caller_never_removes_itself_even_when_its_own_statuses_are_missing():
    watch = StaleMembers(timeout_s=60)
    watch.update([A], [], now=0, me="m-a")
    assert watch.update([A], [], now=1000, me="m-a") == []


def test_a_new_member_gets_the_timeout_to_send_its_first_status():
    watch = StaleMembers(timeout_s=60)
    watch.update([A], [status("worker-a", 0)], now=0, me="m-a")
    # B joins at t=100 with no status yet (the dead worker's history has nothing for it either)
    assert watch.update([A, B], [status("worker-a", 100)], now=100, me="m-a") == []
    assert watch.update([A, B], [status("worker-a", 150)], now=159, me="m-a") == []
    assert watch.update([A, B], [status("worker-a", 160)], now=160, me="m-a") == [B]


def test_a_dynamic_member_is_vouched_for_by_the_member_id_in_its_status():
    dynamic, ghost = GroupMember("m-new", None), GroupMember("m-old", None)
    watch = StaleMembers(timeout_s=60)
    watch.update([A, ghost], [status("worker-a", 0), status("host-17", 0, member_id="m-old")], now=0, me="m-a")
    # host-17 rejoined under a new member id; the broker kept its old one (a ghost nobody speaks for now)
    members = [A, dynamic, ghost]
    statuses = [status("worker-a", 30), status("host-17", 30, member_id="m-new")]
    assert watch.update(members, statuses, now=30, me="m-a") == []
    assert watch.update(members, [status("worker-a", 60), status("host-17", 60, "m-new")], now=60, me="m-a") == [ghost]


def test_a_dynamic_member_is_not_vouched_for_by_a_worker_id_equal_to_its_member_id_field():
    # A dynamic member (no instance id) is matched by member id only, never by worker id.
    member = GroupMember("worker-x", None)
    watch = StaleMembers(timeout_s=60)
    watch.update([A, member], [status("worker-x", 0)], now=0, me="m-a")
    assert watch.update([A, member], [status("worker-x", 60)], now=60, me="m-a") == [member]


def test_a_removed_member_is_forgotten_and_a_rejoin_starts_a_new_grace_period():
    watch = StaleMembers(timeout_s=60)
    watch.update([A, B], [status("worker-a", 0)], now=0, me="m-a")
    assert watch.update([A, B], [status("worker-a", 60)], now=60, me="m-a") == [B]
    watch.update([A], [status("worker-a", 70)], now=70, me="m-a")  # removed
    again = GroupMember("m-b2", "worker-b")  # a fresh incarnation of worker-b, not yet reporting
    assert watch.update([A, again], [status("worker-a", 80)], now=80, me="m-a") == []
    assert watch.update([A, again], [status("worker-a", 140), status("worker-b", 135)], now=140, me="m-a") == []


@pytest.mark.parametrize("value", [1.0, 10.0, 29.9])
def test_a_peer_timeout_shorter_than_a_few_status_intervals_is_refused(value):
    with pytest.raises(ValidationError, match="at least 30 s"):
        Settings(_env_file=None, peer_timeout_s=value)
    assert Settings(_env_file=None, peer_timeout_s=0).peer_timeout_s == 0


def test_keep_running_restarts_a_failing_loop_until_stopped():
    calls = []

    async def main():
        stop = asyncio.Event()

        async def run():
            calls.append(len(calls))
            if len(calls) == 2:
                stop.set()
                return
            raise ConnectionError("broker away")

        await asyncio.wait_for(keep_running(run, "test loop", stop), 10)

    asyncio.run(main())
    assert calls == [0, 1]
