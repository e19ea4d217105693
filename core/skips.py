"""Records a consumer skips, logged without a flood: the first at once, then at most one line a minute.

A record that cannot be dead-lettered (one on a compacted or status topic, whose reader is not the owner of
the data, or one on the dead-letter topic itself) is skipped: the log names its topic, partition, offset and
reason, and how many others were skipped since the previous line, so a stream of bad records costs one line
a minute, not one each.

>>> import logging
>>> from types import SimpleNamespace as Record
>>> skips = SkipLog(logging.getLogger("doctest"), every_s=60.0)
>>> skips.skip(Record(topic="config", partition=0, offset=7), ValueError("bad"))
True
>>> skips.skip(Record(topic="config", partition=0, offset=8), ValueError("bad"))  # within the minute: counted
False
>>> skips.total, skips.pending
(2, 1)
"""

from __future__ import annotations

import logging
import time


class SkipLog:
    """Counts skipped records and logs them at WARNING, at most one line every ``every_s`` seconds."""

    def __init__(self, log: logging.Logger, every_s: float = 60.0, clock=time.monotonic):
        self.log = log
        self.every_s = every_s
        self.clock = clock
        self.total = 0
        self.pending = 0  # skipped since the last line, not named in it
        self._next = float("-inf")

    def skip(self, record, exc: BaseException) -> bool:
        """Count ``record`` (anything with ``topic``, ``partition`` and ``offset``) as skipped for ``exc``;
        True when a line was logged for it."""
        self.total += 1
        now = self.clock()
        if now < self._next:
            self.pending += 1
            return False
        reason = getattr(exc, "reason", type(exc).__name__)
        detail = str(getattr(exc, "detail", exc))[:300]
        more = f" ({self.pending} more skipped since the last line)" if self.pending else ""
        self.log.warning(
            "skipped the record at %s[%s]@%s: %s: %s%s", record.topic, record.partition, record.offset, reason,
            detail, more,
        )  # fmt: skip
        self.pending = 0
        self._next = now + self.every_s
        return True
