"""Fleet defaults and per-camera overrides of the monitor settings, changed at run time.

The API writes :class:`~core.contracts.CameraConfig` records on the compacted ``config`` topic, keyed by
scope ("fleet" or a camera id); every worker (and the API) reads the whole topic from its start and then
follows it (:class:`ConfigFollower`), so a restarted worker has the current settings before its first frame
and a change reaches every worker within a second, without a restart. Compaction keeps the last record per
key; a tombstone removes a camera's overrides.

A record that cannot be read or applied (bad JSON, the wrong shape, a scope that is not its key, or a failure
nobody foresaw) is skipped and logged with its offset (:class:`core.skips.SkipLog`), and the follower goes
on: a compacted topic has no dead letters, and the record's writer, the API, refuses such records already.

A camera's settings are the worker's ``CVOPS_`` settings, overridden by the fleet record, overridden by the
camera's record (:func:`effective`). Thresholds apply to a live camera at once (:data:`LIVE`); sizes and
the range rule's tolerance shape what a camera learns, so they apply when its references are learned
again: set ``relearn_after`` (``POST /api/v1/config/cameras/{id}/relearn``) to do that now. Which is which
is declared with each setting, in :data:`core.monitoring.MONITOR_SETTINGS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from core.contracts import CameraConfig, ContractError, MonitorOverrides, decode_record
from core.kafka import client_options
from core.monitoring import MONITOR_SETTINGS, MonitorSettings
from core.settings import Settings
from core.skips import SkipLog

log = logging.getLogger(__name__)

FLEET = "fleet"

# MonitorOverrides field -> MonitorSettings field
FIELDS = {s.override: s.name for s in MONITOR_SETTINGS if s.override}
# Applied to a live camera at once; the others when its references are next learned.
LIVE = frozenset(s.name for s in MONITOR_SETTINGS if s.override and s.live)


def base_settings(settings: Settings) -> MonitorSettings:
    """The monitor settings of the workers' ``CVOPS_`` configuration: the level under the fleet's. A setting
    with no variable keeps its default; without an embedding model there are no embeddings to watch."""
    values = {s.name: getattr(settings, s.env) for s in MONITOR_SETTINGS if s.env}
    if not settings.embedding_model:
        values["embedding_reference"] = 0
    return MonitorSettings(**values)


def effective(base: MonitorSettings, *levels: MonitorOverrides | None) -> MonitorSettings:
    """``base`` with each level's set fields over it, later levels winning.

    >>> fleet = MonitorOverrides(expected_fps=10, rule_consecutive=5)
    >>> cam = MonitorOverrides(rule_consecutive=2)
    >>> s = effective(MonitorSettings(), fleet, cam)
    >>> (s.expected_fps, s.consecutive, s.warmup)
    (10.0, 2, 150)
    """
    changes = {}
    for level in levels:
        if level is not None:
            changes |= {FIELDS[k]: v for k, v in level.model_dump(exclude_none=True).items()}
    return replace(base, **changes)


class ConfigFollower:
    """Reads the config topic from its start, then follows it; calls ``apply(scope, record or None)`` for
    each record in order. :meth:`wait_loaded` returns once everything present at start has been applied.

    ``started(consumer)``, when given, is called once its consumer has started: the worker and the API pace
    its fetches there on the development broker (``streams.devbroker.fetch_pacing``), which answers an
    empty fetch at once."""

    def __init__(
        self,
        settings: Settings,
        apply: Callable[[str, CameraConfig | None], Awaitable[None] | None],
        started: Callable[[AIOKafkaConsumer], None] | None = None,
    ):
        self.settings = settings
        self.apply = apply
        self.started = started
        self.loaded = asyncio.Event()
        self.skipped = SkipLog(log)
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="config-follower")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def wait_loaded(self, timeout_s: float = 30.0) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.loaded.wait(), timeout_s)
        return self.loaded.is_set()

    async def run(self) -> None:
        """Read and follow the topic until cancelled."""
        topic = self.settings.topic("config")
        consumer = AIOKafkaConsumer(**client_options(self.settings), enable_auto_commit=False)  # no group
        await consumer.start()
        if self.started is not None:
            self.started(consumer)
        try:
            parts = consumer.partitions_for_topic(topic) or set()
            while not parts:  # not created yet: ``cvops topics`` (or the worker) creates it
                await asyncio.sleep(1.0)
                await consumer.topics()  # a fresh metadata request
                parts = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            if all(ends[tp] == 0 for tp in tps):
                self.loaded.set()
            while True:
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    for r in records:
                        try:
                            await self._apply(r)
                        except Exception as exc:  # one record's failure skips that record, never the follower
                            self.skipped.skip(r, exc)
                if not self.loaded.is_set():
                    positions = [await consumer.position(tp) for tp in tps]
                    if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                        self.loaded.set()
        finally:
            await consumer.stop()

    async def _apply(self, record) -> None:
        scope = (record.key or b"").decode("utf-8", "replace")
        if record.value is None:
            config = None
        else:
            config = decode_record(CameraConfig, record.value)
            if config.scope != scope:
                raise ContractError("key_mismatch", f"the record's scope {config.scope!r} is not its key {scope!r}")
        done = self.apply(scope, config)
        if asyncio.iscoroutine(done):
            await done
