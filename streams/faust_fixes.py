"""Two fixes to faust-streaming 0.15.3, which left a worker idle with frames waiting after a rebalance.

Found with kill-and-restart cycles of one worker (SIGKILL, then a new worker with the same
``CVOPS_WORKER_ID``, frames waiting): 15 stalls in 64 restarts. A log of every fetch, seek, pause and resume
showed two ways to lose fetched records. In both, the consumer has already advanced past records that no
stream ever got, so the worker holds its partitions, reports 0 frames/s, and its committed offsets stop
until it is restarted.

1. **An empty set of partitions means "all" to aiokafka.** faust hands its live set of active partitions to
   the consumer thread, whose ``fetched_records`` returns records of every partition when that set is empty.
   At the end of a table recovery faust pauses the changelog partitions while a fetch is waiting: the set
   goes empty, the fetch returns the frames of the still-paused stream partitions, and faust's ``getmany``
   drops them as not active. Fixed by handing aiokafka a view of the live set that is never "empty": a
   fetch returns only what is active when its records arrive, and nothing while nothing is.
2. **The stream partitions resume before they are seeked.** After recovering, faust
   (``Recovery.on_recovery_completed``, or ``Recovery._resume_streams`` for an app without tables) resumes
   the stream partitions, then seeks them to their committed offsets, then resumes flow control. Records
   fetched while the seek runs are delivered and move the read offsets past the committed offsets the seek
   has just set, so the same records fetched again after the seek are dropped as already read. Fixed by
   the order that cannot lose a record: seek, resume flow control, resume the stream partitions.

These are faust's bugs, on any broker: they are not workarounds for the embedded development broker
(:mod:`streams.devbroker`). Each patch in :data:`PATCHES` names the faust-streaming version it was written
for and the upstream report it answers. They replace private methods, so :func:`install` refuses to start
on any other faust version (:class:`FaustVersionError`): read the new version's code for the two bugs, and
drop or port each patch, before moving the pin in ``pyproject.toml``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import NamedTuple

import faust
from faust.tables.recovery import Recovery
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

log = logging.getLogger(__name__)

FIXED_VERSION = "0.15.3"
_originals = {
    (AIOKafkaConsumerThread, "_fetch_records"): AIOKafkaConsumerThread._fetch_records,
    (Recovery, "_resume_streams"): Recovery._resume_streams,
    (Recovery, "on_recovery_completed"): Recovery.on_recovery_completed,
}


class ActivePartitions:
    """faust's live set of active partitions as aiokafka's ``fetched_records`` reads it while it waits:
    membership is read live, and the view is never falsy, so an empty set means no partition, not all.

    >>> live = {"frames/0"}
    >>> view = ActivePartitions(live)
    >>> "frames/0" in view, bool(view)
    (True, True)
    >>> live.clear()
    >>> "frames/0" in view, bool(view)
    (False, True)
    """

    __slots__ = ("live",)

    def __init__(self, live):
        self.live = live

    def __bool__(self) -> bool:
        return True

    def __contains__(self, tp) -> bool:
        return tp in self.live


async def _fetch_records(self, consumer, active_partitions, timeout=None, max_records=None):
    """faust 0.15.3's ``_fetch_records``, with the active partitions read through :class:`ActivePartitions`."""
    asked = None if active_partitions is None else ActivePartitions(active_partitions)
    return await _originals[AIOKafkaConsumerThread, "_fetch_records"](
        self, consumer, asked, timeout=timeout, max_records=max_records
    )


async def _seek_then_resume(self: Recovery, assignment) -> None:
    """Seek the stream partitions to their committed offsets, then resume flow control, then the partitions."""
    app = self.app
    consumer = app.consumer
    streams = {tp for tp in assignment if not self._is_changelog_tp(tp)}
    if assignment:
        self.log.info("Seek stream partitions to committed offsets.")
        await self._wait(consumer.perform_seek(), timeout=app.conf.broker_request_timeout)
    else:
        self.log.info("Resuming streams with empty assignment")
    self.completed.set()
    app.flow_control.resume()  # streams take records again ...
    if streams:
        consumer.resume_partitions(streams)  # ... before any record of theirs is delivered
    consumer.resume_flow()
    await app._fetcher.maybe_start()
    self.tables.on_actives_ready()


async def _resume_streams(self: Recovery, generation_id: int = 0) -> None:
    """faust 0.15.3's ``Recovery._resume_streams`` (an app without tables), seeking before resuming."""
    await self.app.on_rebalance_complete.send()
    assignment = self.app.consumer.assignment()
    if self.app.consumer_generation_id != generation_id:
        self.log.warning("Recovery rebalancing again")
        return
    await _seek_then_resume(self, assignment)
    self.tables.on_standbys_ready()
    self.app.on_rebalance_end()
    self.log.info("Worker ready")


async def on_recovery_completed(self: Recovery, generation_id: int = 0) -> None:
    """faust 0.15.3's ``Recovery.on_recovery_completed`` (after a table recovery), seeking before resuming."""
    app = self.app
    self.log.info("Restore complete!")
    await app.on_rebalance_complete.send()
    self._set_recovery_ended()
    callbacks = [
        asyncio.ensure_future(
            table.on_recovery_completed(self.actives_for_table[table], self.standbys_for_table[table])
        )
        for table in self.tables.values()
    ]
    if callbacks:
        await asyncio.wait(callbacks)
    assignment = app.consumer.assignment()
    if app.consumer_generation_id != generation_id:
        self.log.warning(f"Recovery rebalancing again app id {app.consumer_generation_id} param {generation_id}")
        return
    await _seek_then_resume(self, assignment)
    if not app.assignor.assigned_standbys():
        self.tables.on_standbys_ready()
    app.on_rebalance_end()
    self.log.info("Worker ready")


class Patch(NamedTuple):
    owner: type
    name: str
    replacement: object
    written_for: str  # the faust-streaming version whose code it replaces
    upstream: str  # the report it answers


PATCHES = (
    # 1. An empty set of active partitions read as "all": the race robinhood/faust#69 fixed with a lock around
    # getmany, which faust-streaming's consumer thread no longer takes; seen upstream as partitions that are
    # assigned and never processed after a rebalance (faust-streaming/faust#166, open).
    Patch(
        AIOKafkaConsumerThread,
        "_fetch_records",
        _fetch_records,
        FIXED_VERSION,
        "https://github.com/faust-streaming/faust/issues/166 (cause: https://github.com/robinhood/faust/pull/69)",
    ),
    # 2. Stream partitions resumed before the seek: faust-streaming/faust#216, whose fix (#217) moved the seek
    # ahead of flow control but still resumes the partitions before flow control, in both methods.
    Patch(
        Recovery,
        "_resume_streams",
        _resume_streams,
        FIXED_VERSION,
        "https://github.com/faust-streaming/faust/issues/216",
    ),
    Patch(
        Recovery,
        "on_recovery_completed",
        on_recovery_completed,
        FIXED_VERSION,
        "https://github.com/faust-streaming/faust/issues/216",
    ),
)


class FaustVersionError(RuntimeError):
    """faust is not the version the patches were written for."""


def install() -> bool:
    """Apply the patches (idempotent). Raises :class:`FaustVersionError` on a faust version they were not
    written for: a worker must not start with a consumer that may lose frames after a rebalance."""
    wrong = [p for p in PATCHES if p.written_for != faust.__version__]
    if wrong:
        raise FaustVersionError(
            f"faust-streaming {faust.__version__} is installed, but the patches in streams/faust_fixes.py "
            f"were written for {', '.join(sorted({p.written_for for p in wrong}))} "
            f"({'; '.join(f'{p.owner.__name__}.{p.name}: {p.upstream}' for p in wrong)}): install the pinned "
            "faust-streaming, or check each patch against this version and update it"
        )
    for p in PATCHES:
        setattr(p.owner, p.name, p.replacement)
    log.info("faust %s: fixes for lost frames after a rebalance installed (streams/faust_fixes.py)", faust.__version__)
    return True
