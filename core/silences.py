"""Silences: the acknowledgements and silences people set on incidents and cameras, and which incident
notifications they withhold.

Pure state, no Kafka: the records of the compacted ``acknowledgements`` topic (``Acknowledgement``, the newest
per key), fed by whoever reads that topic (:class:`core.compacted.CompactedReader`). The notifier
(``streams.incident_stream``) asks :meth:`Silences.withheld` before it tells anyone; the API (:mod:`api.fleet`)
shows what is in force and lifts it. It lives in the core because both keep one, and the API depends on the
core only.
"""

from __future__ import annotations

from core.contracts import Acknowledgement, ContractError


class Silences:
    """The acknowledgements and silences people set (``Acknowledgement`` records of the compacted
    ``acknowledgements`` topic, the newest per key), and which notifications they withhold:

    - a silence withholds every notification of an incident that is silenced, or whose cameras all are (a
      silenced camera's alerts are recorded and grouped all the same: only telling stops);
    - an acknowledgement withholds the repeats (``joined``) of an incident that is acknowledged, or whose
      cameras all are: its raise was heard; its resolve is still told.

    >>> s = Silences()
    >>> s.apply("silence:camera:c1", Acknowledgement(action="silence", target="camera", target_id="c1", by="ann",
    ...                                              at=0, until=3600))
    >>> s.withheld("inc-1", ["c1"], "raised", now=60)
    'silenced: camera c1 by ann'
    >>> s.withheld("inc-1", ["c1", "c2"], "raised", now=60) is None, s.withheld("inc-1", ["c1"], "raised", now=3600)
    (True, None)
    """

    def __init__(self) -> None:
        self.records: dict[str, Acknowledgement] = {}

    def apply(self, key: str, record: Acknowledgement | None) -> None:
        """A record of the topic under ``key``; None is a tombstone. ContractError for a record not of its key."""
        if record is None:
            self.records.pop(key, None)
            return
        if record.key != key:
            raise ContractError("key_mismatch", f"the record's key {record.key!r} is not its key {key!r}")
        self.records[key] = record

    def holding(self, action: str, target: str, target_id: str, now: float) -> Acknowledgement | None:
        """The acknowledgement or silence of ``target_id`` in force at ``now``, or None."""
        r = self.records.get(f"{action}:{target}:{target_id}")
        return r if r is not None and r.holds(now) else None

    def withheld(self, incident_id: str, cameras: list[str], status: str, now: float) -> str | None:
        """Why a notification of ``status`` for this incident is not sent at ``now``; None: it is sent."""
        if (why := self._covered("silence", incident_id, cameras, now)) is not None:
            return f"silenced: {why}"
        if status == "joined" and (why := self._covered("acknowledge", incident_id, cameras, now)) is not None:
            return f"acknowledged: {why}"
        return None

    def _covered(self, action: str, incident_id: str, cameras: list[str], now: float) -> str | None:
        if (r := self.holding(action, "incident", incident_id, now)) is not None:
            return f"incident by {r.by}"
        held = [self.holding(action, "camera", c, now) for c in cameras]
        if not cameras or not all(held):
            return None
        names = sorted({r.by for r in held if r is not None})
        shown = ", ".join(cameras[:5]) + (f" and {len(cameras) - 5} more" if len(cameras) > 5 else "")
        return f"camera{'s' if len(cameras) > 1 else ''} {shown} by {', '.join(names)}"
