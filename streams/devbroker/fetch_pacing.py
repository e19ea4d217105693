"""Pace empty fetches of every aiokafka consumer in this process (faust's included).

Applies to: the embedded broker, noida-db 0.2.3, under the ``embedded`` broker profile (:mod:`streams.devbroker`
installs it; under ``kafka`` nothing here runs). Written against aiokafka 0.14's ``Fetcher._proc_fetch_request``.

Kafka brokers hold an empty fetch until data arrives or ``fetch_max_wait_ms`` passes (long polling), so an
idle consumer costs nothing. Some Kafka-protocol brokers answer an empty fetch at once; the embedded
development broker does, and an idle aiokafka consumer then spins at ~85% of a core (measured), starving
inference on a small machine. After a fetch that brought nothing back sooner than
``CVOPS_EMPTY_FETCH_PAUSE_MS``, the fetch task waits out the rest of that time. Against a real Kafka an
empty fetch already takes ``fetch_max_wait_ms`` (500 ms by default), so the pause never applies there.

A consumer that follows a slow topic (the config, the workers' statuses) can be paced longer with
:func:`pace`: it then costs its process less CPU while it waits, and answers later by at most that much.

A consumer whose process already holds enough work can be held with :func:`hold`: it fetches no more
until the process runs low. The worker holds its frames consumer while it has two batches' worth of
frames in hand, so that it fetches in fewer, larger fetches instead of one small fetch per frame that
arrives (measured on 2 cores under full load: its consumer thread fell from about 1.1 to 0.3 ms of CPU
per frame, with no fewer frames/s).

aiokafka has no setting for this, hence the wrap of one private method, checked at install time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiokafka.consumer.fetcher import Fetcher

log = logging.getLogger(__name__)
SLOW_TOPIC_PAUSE_MS = 250  # config records and worker statuses: a quarter of a second late is on time
HOLD_STEP_MS = 20  # how often a held consumer checks whether it may fetch again
_original = Fetcher._proc_fetch_request
_pause_s = 0.0


async def _paced(self, assignment, node_id, request):
    started = time.monotonic()
    before = sum(1 for _ in self._records)
    result = await _original(self, assignment, node_id, request)
    pause_s = getattr(self, "_cvops_pause_s", _pause_s)
    busy, most_s = getattr(self, "_cvops_hold", (None, 0.0))
    try:
        if pause_s and sum(1 for _ in self._records) == before:
            remaining = pause_s - (time.monotonic() - started)
            if remaining > 0:
                await asyncio.sleep(remaining)
        if busy is not None:
            held_since = time.monotonic()
            while busy() and time.monotonic() - held_since < most_s:
                await asyncio.sleep(HOLD_STEP_MS / 1000)
    except asyncio.CancelledError:  # the consumer is closing or lost the partition, as in the original
        return False
    return result


def install(pause_ms: float) -> None:
    """Pause empty fetches for up to ``pause_ms`` (0 turns that pause off; :func:`hold` still works).
    Idempotent."""
    global _pause_s
    if not hasattr(Fetcher, "_proc_fetch_request") or not hasattr(Fetcher, "__init__"):
        log.warning("aiokafka changed: empty-fetch pacing is not installed")
        return
    _pause_s = max(0.0, pause_ms / 1000)
    Fetcher._proc_fetch_request = _paced


def pace(consumer, pause_ms: float) -> None:
    """Pause this started consumer's empty fetches for ``pause_ms`` (when pacing is installed, and never less
    than the process-wide pause): for consumers of topics where a delay of that much does not matter."""
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is not None:
        fetcher._cvops_pause_s = max(_pause_s, pause_ms / 1000)


def pace_slow_topic(consumer) -> None:
    """:func:`pace` at :data:`SLOW_TOPIC_PAUSE_MS`: the ``started`` hook of the followers of slow topics
    (:class:`core.directory.WorkerDirectory`, :class:`core.fleetconfig.ConfigFollower`,
    :class:`core.compacted.CompactedReader`), which the command line hands to the worker and the API."""
    pace(consumer, SLOW_TOPIC_PAUSE_MS)


def hold(consumer, busy: Callable[[], bool], most_ms: float) -> None:
    """Let this started consumer fetch no more while ``busy()`` says its process holds enough work (checked
    every :data:`HOLD_STEP_MS` from the consumer's thread, so it must be cheap and thread-safe), for at most
    ``most_ms`` in a row. Works once :func:`install` has run."""
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is not None:
        fetcher._cvops_hold = (busy, most_ms / 1000)
