"""A worker that holds frames partitions with frames waiting, and has made no progress on them for
``CVOPS_WORKER_STALL_S``, exits non-zero, so that its supervisor (``cvops demo``, compose's
``restart: unless-stopped``, Kubernetes) starts it again.

Why: a worker can stay a live member of its group (its consumer heartbeats from a task of its own) while
it processes nothing: faust once lost fetched records after a rebalance and the worker sat idle with
frames waiting (:mod:`streams.faust_fixes`), and a hung inference call or a dead stage would do the same.
The group keeps those partitions assigned to it and their cameras go dark; nothing else notices.

Progress is what the group has committed: a worker commits a frame's offset only once its outputs are
durable (the worker's "Delivery"), so a committed offset that moves is frames done. Every ``stall_s / 4``
the watch reads the committed offsets of the frames partitions this worker holds (an admin client, as
:mod:`streams.devbroker.purge` does) and their first and end offsets (a consumer of no group), with clients of its
own, so it still sees when faust's consumer is wedged.

A partition is *waiting* when its end offset is past its committed offset (past its first offset when
nothing is committed yet, or when retention deleted frames never processed), and *stalled* once it has
been waiting for ``stall_s`` without its committed offset moving. So an idle worker (nothing waiting) never
stalls, and a slow one (its commits move) never does. Every clock starts again after a rebalance (a
table's recovery is not counted: on the embedded broker, which never compacts, it grows with the run) and
after a gap between two reads (the broker away: a restart would not help, and the worker needs a moment
once it is back).

Why exit rather than seek the stalled partitions again: seeking inside a running faust consumer is
exactly where it lost records (:mod:`streams.faust_fixes`), and a stall may be outside the consumer (a
hung inference thread). A new process builds the consumer, its positions and the stages again from the
committed offsets, and with a stable ``CVOPS_WORKER_ID`` takes its partitions back at once. Frames judged
but not yet committed are judged again: at-least-once, as after any crash (the store folds duplicates).

>>> watch = StallWatch(stall_s=120)
>>> watch.update({0: Offsets(committed=10, start=0, end=50)}, now=0)
[]
>>> watch.update({0: Offsets(committed=10, start=0, end=60)}, now=60)
[]
>>> watch.update({0: Offsets(committed=10, start=0, end=60)}, now=120)
[Stalled(partition=0, committed=10, end=60, for_s=120)]
>>> describe([Stalled(0, 10, 60, 120.0), Stalled(2, None, 5, 121.0)])
'partition 0 committed 10, end 60; partition 2 committed nothing, end 5'
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from core.kafka import client_options
from core.settings import Settings

log = logging.getLogger(__name__)
EXIT_STALLED = 3  # the exit status of a worker that stopped itself for a stall


class Offsets(NamedTuple):
    committed: int | None  # the group's committed offset; None when nothing is committed
    start: int  # the partition's first offset
    end: int  # the partition's end offset (the next record's offset)

    @property
    def waiting(self) -> bool:
        """Frames wait: records after what is committed (or, if nothing is or it expired, after the first)."""
        done = self.start if self.committed is None else max(self.committed, self.start)
        return self.end > done


class Stalled(NamedTuple):
    partition: int
    committed: int | None
    end: int
    for_s: float  # how long it has been waiting without progress


class StallWatch:
    """Which held partitions have had frames waiting for ``stall_s`` without their committed offset moving.

    Feed it every read with :meth:`update`; a read more than ``max_gap_s`` (default ``stall_s / 2``) after the
    one before starts every clock again, and so does :meth:`forget` (call it during a rebalance).
    """

    def __init__(self, stall_s: float, max_gap_s: float | None = None):
        self.stall_s = stall_s
        self.max_gap_s = stall_s / 2 if max_gap_s is None else max_gap_s
        self.last_read: float | None = None
        self.seen: dict[int, tuple[int | None, float]] = {}  # partition -> (committed, since when unchanged)

    def forget(self) -> None:
        self.seen.clear()
        self.last_read = None

    def update(self, offsets: Mapping[int, Offsets], now: float) -> list[Stalled]:
        """The partitions stalled now, of those in ``offsets`` (the ones held now; the others are dropped)."""
        if self.last_read is not None and now - self.last_read > self.max_gap_s:
            self.seen.clear()
        self.last_read = now
        seen = {}
        for p, o in offsets.items():
            before = self.seen.get(p)
            progressed = before is None or before[0] != o.committed or not o.waiting
            seen[p] = (o.committed, now if progressed else before[1])
        self.seen = seen
        return [
            Stalled(p, o.committed, o.end, now - seen[p][1])
            for p, o in sorted(offsets.items())
            if now - seen[p][1] >= self.stall_s
        ]


def describe(stalled: Iterable[Stalled]) -> str:
    """The stalled partitions, their committed and end offsets, for the log."""
    return "; ".join(
        f"partition {s.partition} committed {'nothing' if s.committed is None else s.committed}, end {s.end}"
        for s in stalled
    )


class LivenessWatch:
    """A worker's loop: every ``stall_s / 4``, read the offsets of the frames partitions that ``held()``
    names (a callable: None while the worker is rebalancing) and, once some are stalled, await
    ``on_stall(stalled)`` and return."""

    def __init__(
        self,
        settings: Settings,
        held: Callable[[], Iterable[int] | None],
        on_stall: Callable[[list[Stalled]], Awaitable[object]],
    ):
        self.settings = settings
        self.held = held
        self.on_stall = on_stall
        self.topic = settings.topic("frames")
        self.every_s = settings.worker_stall_s / 4

    async def run(self) -> None:
        watch = StallWatch(self.settings.worker_stall_s)
        admin = AIOKafkaAdminClient(**client_options(self.settings))
        ends = AIOKafkaConsumer(**client_options(self.settings), group_id=None, enable_auto_commit=False)
        await admin.start()
        try:
            await ends.start()
            while True:
                await asyncio.sleep(self.every_s)
                held = self.held()
                if held is None:  # rebalancing: the clocks start again after it
                    watch.forget()
                    continue
                offsets = await self.read(admin, ends, sorted(held))
                if self.held() is None or sorted(self.held() or ()) != sorted(offsets):
                    watch.forget()  # the assignment changed while reading
                    continue
                stalled = watch.update(offsets, time.monotonic())
                if stalled:
                    await self.on_stall(stalled)
                    return
        finally:
            await ends.stop()
            await admin.close()

    async def read(self, admin: AIOKafkaAdminClient, ends: AIOKafkaConsumer, partitions: list[int]):
        """Partition -> its :class:`Offsets`, for these frames partitions."""
        if not partitions:
            return {}
        tps = [TopicPartition(self.topic, p) for p in partitions]
        committed = await admin.list_consumer_group_offsets(self.settings.app_id, partitions=tps)
        first, last = await ends.beginning_offsets(tps), await ends.end_offsets(tps)
        out = {}
        for tp in tps:
            meta = committed.get(tp)
            offset = meta.offset if meta is not None and meta.offset >= 0 else None
            out[tp.partition] = Offsets(offset, first[tp], last[tp])
        return out


def exit_if_still_running(stalled: threading.Event, grace_s: float, code: int = EXIT_STALLED) -> threading.Thread:
    """Once ``stalled`` is set, give the process ``grace_s`` to stop by itself, then end it with ``code``: a
    stall may be a thread that never returns (a hung inference call), which a normal exit would wait for."""

    def wait_then_exit() -> None:
        stalled.wait()
        time.sleep(grace_s)
        log.error("still running %.0f s after stopping for a stall: exiting now", grace_s)
        logging.shutdown()
        os._exit(code)

    thread = threading.Thread(target=wait_then_exit, name="stall-exit", daemon=True)
    thread.start()
    return thread


def take_stall_file(path: str) -> bool:
    """Test hook (``CVOPS_DEBUG_STALL_FILE``): True once, when the file exists, which is then removed."""
    try:
        Path(path).unlink()
    except FileNotFoundError:
        return False
    return True


class WorkerStalled(RuntimeError):
    """Why a worker stopped itself: frames waiting and no progress for ``CVOPS_WORKER_STALL_S``."""
