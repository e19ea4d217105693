"""Pace empty fetches of every aiokafka consumer in this process (faust's included).

Kafka brokers hold an empty fetch until data arrives or ``fetch_max_wait_ms`` passes (long polling), so an
idle consumer costs nothing. Some Kafka-protocol brokers answer an empty fetch at once; the embedded
development broker does, and an idle aiokafka consumer then spins at ~85% of a core (measured), starving
inference on a small machine. After a fetch that brought nothing back sooner than
``CVOPS_EMPTY_FETCH_PAUSE_MS``, the fetch task waits out the rest of that time. Against a real Kafka an
empty fetch already takes ``fetch_max_wait_ms`` (500 ms by default), so the pause never applies there.

aiokafka has no setting for this, hence the wrap of one private method, checked at install time.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka.consumer.fetcher import Fetcher

log = logging.getLogger(__name__)
_original = Fetcher._proc_fetch_request
_pause_s = 0.0


async def _paced(self, assignment, node_id, request):
    started = time.monotonic()
    before = sum(1 for _ in self._records)
    result = await _original(self, assignment, node_id, request)
    if _pause_s and sum(1 for _ in self._records) == before:
        remaining = _pause_s - (time.monotonic() - started)
        if remaining > 0:
            try:
                await asyncio.sleep(remaining)
            except asyncio.CancelledError:  # the consumer is closing or lost the partition, as in the original
                return False
    return result


def install(pause_ms: float) -> None:
    """Pause empty fetches for up to ``pause_ms`` (0 turns pacing off). Idempotent."""
    global _pause_s
    if not hasattr(Fetcher, "_proc_fetch_request") or not hasattr(Fetcher, "__init__"):
        log.warning("aiokafka changed: empty-fetch pacing is not installed")
        return
    _pause_s = max(0.0, pause_ms / 1000)
    Fetcher._proc_fetch_request = _paced if _pause_s else _original
