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

This replaces three private methods, so :func:`install` applies the fixes only to the faust version they
were written against (the one ``pyproject.toml`` pins) and warns on any other.
"""

from __future__ import annotations

import asyncio
import logging

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


def install() -> bool:
    """Apply the fix (idempotent); False, with a warning, on a faust version it was not written for."""
    if faust.__version__ != FIXED_VERSION:
        log.warning(
            "faust %s is not %s: the fixes in streams/faust_fixes.py are not installed; a worker may sit idle "
            "with frames waiting after a rebalance",
            faust.__version__,
            FIXED_VERSION,
        )
        return False
    AIOKafkaConsumerThread._fetch_records = _fetch_records
    Recovery._resume_streams = _resume_streams
    Recovery.on_recovery_completed = on_recovery_completed
    log.info("faust %s: fixes for lost frames after a rebalance installed (streams/faust_fixes.py)", faust.__version__)
    return True
