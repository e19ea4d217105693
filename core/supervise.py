"""Keep a long-running loop (a topic follower, the store writer) alive through failures; run an admin
client's round every few seconds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiokafka.admin import AIOKafkaAdminClient

from core.kafka import client_options
from core.settings import Settings

log = logging.getLogger(__name__)


async def keep_running(run: Callable[[], Awaitable[object]], what: str, stop: asyncio.Event | None = None) -> None:
    """Await ``run()`` until ``stop`` is set (forever without one); when it fails (the broker away for a
    while, say), log why and start it again, backing off from 1 s to 30 s. Cancellation ends it."""
    stop = stop or asyncio.Event()
    delay = 1.0
    while not stop.is_set():
        try:
            await run()
            delay = 1.0
        except Exception as exc:
            log.error("%s failed (%s: %s); restarting in %.0f s", what, type(exc).__name__, exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 30.0)


async def admin_rounds(
    settings: Settings, every_s: float, step: Callable[[AIOKafkaAdminClient], Awaitable[object]], what: str
) -> None:
    """Every ``every_s``, ``await step(admin)`` on one admin client for ``settings``; a round that fails
    (the broker away for a while) is logged and the next one tried. Cancellation ends it."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        while True:
            await asyncio.sleep(every_s)
            try:
                await step(admin)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s: %s: %s", what, type(exc).__name__, exc)
    finally:
        await admin.close()
