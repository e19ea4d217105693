"""Points in time as query parameters: unix seconds (``1767225600``, ``1767225600.5``) or ISO 8601
(``2026-01-01T00:00:00Z``; without a zone it is UTC), within what a ``DateTime64(3)`` column holds."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import AfterValidator

FIRST_YEAR, LAST_YEAR = 1970, 2261


def _utc_in_range(value: dt.datetime) -> dt.datetime:
    value = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    try:
        year = value.astimezone(dt.UTC).year
    except OverflowError:  # e.g. 0001-01-01T00:01+04:00 falls before year 1 in UTC (found by schemathesis)
        year = FIRST_YEAR - 1
    if not FIRST_YEAR <= year < LAST_YEAR:
        raise ValueError(f"times run from {FIRST_YEAR} to {LAST_YEAR - 1}")
    return value


END_OF_TIME_MS = round(dt.datetime(LAST_YEAR, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
Instant = Annotated[dt.datetime, AfterValidator(_utc_in_range)]


def unix_ms(value: dt.datetime) -> int:
    """Milliseconds since the epoch, as the store's ``fromUnixTimestamp64Milli`` takes them."""
    return round(value.timestamp() * 1000)


def unix_s(value: dt.datetime | None) -> float | None:
    """Seconds since the epoch of a time read from the store; a naive one (chdb gives those) is UTC."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()
