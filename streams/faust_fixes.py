"""A fix for a race in faust-streaming 0.15.3 that leaves a worker idle with frames waiting after a rebalance.

Once it has recovered its tables, faust (``Recovery.on_recovery_completed``, and ``Recovery._resume_streams``
for an app without tables) does, in this order:

1. resume the stream partitions (the frames and feedback topics),
2. seek them to their committed offsets,
3. resume flow control.

Its consumer is already fetching at step 1 (it was resumed to read the changelogs), so records of the stream
partitions are fetched and delivered while the seek runs. Delivering them moves the consumer's read offsets
past the committed offsets the seek has just set, and when the same records arrive again after the seek
they are dropped as already read; those that the stream skipped or had not taken yet are never processed.
The committed offset then stops at the first of them: the worker holds its partitions, frames wait, and it
reports 0 frames/s until it is restarted. Measured with kill-and-restart cycles of one worker (SIGKILL, then
a new worker with the same ``CVOPS_WORKER_ID``): 13 stalls in 49 restarts before this fix. A log of every
fetch showed the frames fetched during the seek, then fetched again and never delivered.

The fix runs the same steps in the order that cannot lose a record: seek, resume flow control, resume the
stream partitions. Until then the stream partitions stay paused, so nothing of them is delivered from before
the seek, and nothing before a stream can take it.

It replaces two private methods, so :func:`install` applies it only to the faust version it was written
against (the one ``pyproject.toml`` pins) and warns on any other.
"""

from __future__ import annotations

import asyncio
import logging

import faust
from faust.tables.recovery import Recovery

log = logging.getLogger(__name__)

FIXED_VERSION = "0.15.3"
_originals = {"_resume_streams": Recovery._resume_streams, "on_recovery_completed": Recovery.on_recovery_completed}


async def _resume_streams(self: Recovery, generation_id: int = 0) -> None:
    """faust 0.15.3's ``Recovery._resume_streams`` with the seek before the stream partitions resume."""
    app = self.app
    consumer = app.consumer
    await app.on_rebalance_complete.send()
    assignment = consumer.assignment()
    if app.consumer_generation_id != generation_id:
        self.log.warning("Recovery rebalancing again")
        return
    streams = {tp for tp in assignment if not self._is_changelog_tp(tp)}
    if assignment:
        self.log.info("Seek stream partitions to committed offsets.")
        await self._wait(consumer.perform_seek(), timeout=app.conf.broker_request_timeout)
    else:
        self.log.info("Resuming streams with empty assignment")
    self.completed.set()
    self.log.info("Resuming flow...")
    app.flow_control.resume()  # streams take records again ...
    if streams:
        consumer.resume_partitions(streams)  # ... before any record of theirs is delivered
    consumer.resume_flow()
    await app._fetcher.maybe_start()
    self.tables.on_actives_ready()
    self.tables.on_standbys_ready()
    app.on_rebalance_end()
    self.log.info("Worker ready")


async def on_recovery_completed(self: Recovery, generation_id: int = 0) -> None:
    """faust 0.15.3's ``Recovery.on_recovery_completed`` with the seek before the stream partitions resume."""
    app = self.app
    consumer = app.consumer
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
    assignment = consumer.assignment()
    if app.consumer_generation_id != generation_id:
        self.log.warning(f"Recovery rebalancing again app id {app.consumer_generation_id} param {generation_id}")
        return
    streams = {tp for tp in assignment if not self._is_changelog_tp(tp)}
    if assignment:
        self.log.info("Seek stream partitions to committed offsets.")
        await self._wait(consumer.perform_seek(), timeout=app.conf.broker_request_timeout)
    self.completed.set()
    app.flow_control.resume()  # streams take records again ...
    if streams:
        consumer.resume_partitions(streams)  # ... before any record of theirs is delivered
    consumer.resume_flow()
    await app._fetcher.maybe_start()
    self.tables.on_actives_ready()
    if not app.assignor.assigned_standbys():
        self.tables.on_standbys_ready()
    app.on_rebalance_end()
    self.log.info("Worker ready")


def install() -> bool:
    """Apply the fix (idempotent); False, with a warning, on a faust version it was not written for."""
    if faust.__version__ != FIXED_VERSION:
        log.warning(
            "faust %s is not %s: the stream-resume fix (streams/faust_fixes.py) is not installed; a worker may "
            "sit idle with frames waiting after a rebalance",
            faust.__version__,
            FIXED_VERSION,
        )
        return False
    Recovery._resume_streams = _resume_streams
    Recovery.on_recovery_completed = on_recovery_completed
    return True
