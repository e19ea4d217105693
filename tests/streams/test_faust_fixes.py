"""The faust fixes, on stand-ins for faust's recovery service and consumer thread: what is asked of aiokafka,
and the order of the steps after a recovery. The real thing runs in tests/test_faults.py, whose worker is
killed and restarted with frames waiting."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from faust.tables.recovery import Recovery
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from streams import faust_fixes

CHANGELOG, FRAMES, FEEDBACK = ("w-camera-health-changelog", 0), ("t.frames", 0), ("t.feedback", 0)


def recovery(calls: list, generation: int = 3):
    async def perform_seek():
        calls.append("seek")

    async def wait(coro, timeout):
        await coro

    async def nothing(*args, **kwargs):
        return None

    consumer = SimpleNamespace(
        assignment=lambda: {CHANGELOG, FRAMES, FEEDBACK},
        perform_seek=perform_seek,
        resume_partitions=lambda tps: calls.append(("resume_partitions", sorted(tps))),
        resume_flow=lambda: calls.append("resume_flow"),
    )
    app = SimpleNamespace(
        consumer=consumer,
        consumer_generation_id=generation,
        on_rebalance_complete=SimpleNamespace(send=nothing),
        conf=SimpleNamespace(broker_request_timeout=90.0),
        flow_control=SimpleNamespace(resume=lambda: calls.append("flow_control")),
        _fetcher=SimpleNamespace(maybe_start=nothing),
        on_rebalance_end=lambda: calls.append("rebalance_end"),
    )
    log = SimpleNamespace(info=lambda *a: None, warning=lambda *a: calls.append("warning"))
    app.assignor = SimpleNamespace(assigned_standbys=lambda: set())

    class Table:  # hashable, as faust's tables are
        def on_recovery_completed(self, actives, standbys):
            calls.append(("table_recovered", sorted(actives)))
            return nothing()

    table = Table()
    tables = SimpleNamespace(on_actives_ready=lambda: None, on_standbys_ready=lambda: None, values=lambda: [table])
    return SimpleNamespace(
        app=app,
        log=log,
        _wait=wait,
        _is_changelog_tp=lambda tp: tp == CHANGELOG,
        _set_recovery_ended=lambda: calls.append("recovery_ended"),
        completed=SimpleNamespace(set=lambda: calls.append("completed")),
        tables=tables,
        actives_for_table={table: {CHANGELOG}},
        standbys_for_table={table: set()},
    )


AFTER_THE_SEEK = [
    "seek",
    "completed",
    "flow_control",
    ("resume_partitions", sorted([FEEDBACK, FRAMES])),  # never the changelog
    "resume_flow",
    "rebalance_end",
]


def test_stream_partitions_resume_only_after_the_seek_and_flow_control():
    calls: list = []
    asyncio.run(faust_fixes._resume_streams(recovery(calls), generation_id=3))
    assert calls == AFTER_THE_SEEK


def test_after_a_table_recovery_too():
    calls: list = []
    asyncio.run(faust_fixes.on_recovery_completed(recovery(calls), generation_id=3))
    assert calls == ["recovery_ended", ("table_recovered", [CHANGELOG]), *AFTER_THE_SEEK]


def test_a_newer_generation_leaves_everything_to_the_next_recovery():
    calls: list = []
    asyncio.run(faust_fixes._resume_streams(recovery(calls, generation=4), generation_id=3))
    asyncio.run(faust_fixes.on_recovery_completed(recovery(calls, generation=4), generation_id=3))
    assert calls == ["warning", "recovery_ended", ("table_recovered", [CHANGELOG]), "warning"]


def test_a_fetch_asks_aiokafka_for_the_live_active_partitions_and_never_for_all(monkeypatch):
    seen = []

    async def original(self, consumer, active_partitions, timeout=None, max_records=None):
        live = active_partitions
        seen.append((bool(live), FRAMES in live))
        active.clear()  # faust pauses the last active partition while the fetch waits
        seen.append((bool(live), FRAMES in live))
        return {}

    monkeypatch.setitem(faust_fixes._originals, (AIOKafkaConsumerThread, "_fetch_records"), original)
    active = {FRAMES}
    asyncio.run(faust_fixes._fetch_records(None, None, active, timeout=1.0))
    # aiokafka reads an empty (falsy) set as "every partition": the view stays truthy and reads membership live
    assert seen == [(True, True), (True, False)]


def test_install_replaces_the_methods_on_the_pinned_faust_and_refuses_any_other(monkeypatch):
    def restore():
        for (cls, name), original in faust_fixes._originals.items():
            monkeypatch.setattr(cls, name, original)

    restore()
    assert faust_fixes.install() is True
    assert AIOKafkaConsumerThread._fetch_records is faust_fixes._fetch_records
    assert Recovery._resume_streams is faust_fixes._resume_streams
    assert Recovery.on_recovery_completed is faust_fixes.on_recovery_completed
    restore()
    monkeypatch.setattr(faust_fixes.faust, "__version__", "0.16.0")
    with pytest.raises(faust_fixes.FaustVersionError, match=r"0\.16\.0.*written for 0\.15\.3.*issues/216"):
        faust_fixes.install()
    assert Recovery.on_recovery_completed is faust_fixes._originals[Recovery, "on_recovery_completed"]


def test_every_patch_names_its_faust_version_and_upstream_report():
    assert {(p.owner, p.name) for p in faust_fixes.PATCHES} == set(faust_fixes._originals)
    for p in faust_fixes.PATCHES:
        assert p.written_for == faust_fixes.FIXED_VERSION and p.upstream.startswith("https://github.com/")
