"""Acknowledgements and silences, and which notifications they withhold: pure, no Kafka."""

from __future__ import annotations

import doctest

import pytest

from core import silences
from core.contracts import Acknowledgement, ContractError
from core.silences import Silences


def test_the_docstring_examples_run():
    result = doctest.testmod(silences)
    assert result.attempted > 0 and result.failed == 0


def set_(s: Silences, action: str, target: str, target_id: str, at: float = 0.0, until: float | None = None) -> None:
    r = Acknowledgement(action=action, target=target, target_id=target_id, by="ann", at=at, until=until)
    s.apply(r.key, r)


def test_a_silence_withholds_everything_until_it_ends_an_acknowledgement_the_repeats():
    s = Silences()
    set_(s, "silence", "incident", "inc-1", until=100)
    assert all(s.withheld("inc-1", ["c1"], status, now=50) for status in ("raised", "joined", "resolved"))
    assert s.withheld("inc-1", ["c1"], "resolved", now=100) is None  # it ended
    assert s.withheld("inc-2", ["c1"], "raised", now=50) is None  # another incident
    set_(s, "acknowledge", "incident", "inc-1")
    assert s.withheld("inc-1", ["c1"], "joined", now=500) == "acknowledged: incident by ann"
    assert s.withheld("inc-1", ["c1"], "resolved", now=500) is None  # the resolve is news, not a repeat
    set_(s, "acknowledge", "incident", "inc-1", at=600, until=600)  # lifted
    assert s.withheld("inc-1", ["c1"], "joined", now=601) is None


def test_a_silenced_camera_withholds_the_incidents_of_silenced_cameras_alone():
    s = Silences()
    set_(s, "silence", "camera", "c1", until=1000)
    assert s.withheld("inc-1", ["c1"], "raised", now=10) == "silenced: camera c1 by ann"
    assert s.withheld("inc-1", ["c1", "c2"], "raised", now=10) is None  # c2 still speaks for the site
    set_(s, "silence", "camera", "c2", until=1000)
    assert s.withheld("inc-1", ["c1", "c2"], "joined", now=10) == "silenced: cameras c1, c2 by ann"
    assert s.withheld("inc-1", [], "raised", now=10) is None
    set_(s, "acknowledge", "camera", "c3")
    assert s.withheld("inc-9", ["c3"], "raised", now=10) is None and s.withheld("inc-9", ["c3"], "joined", now=10)


def test_a_record_not_of_its_key_is_refused_and_a_tombstone_removes_one():
    s = Silences()
    r = Acknowledgement(action="silence", target="camera", target_id="c1", by="ann", until=1e12)
    with pytest.raises(ContractError, match="key_mismatch"):
        s.apply("silence:camera:c2", r)
    s.apply(r.key, r)
    assert s.holding("silence", "camera", "c1", now=0) == r
    s.apply(r.key, None)
    assert s.holding("silence", "camera", "c1", now=0) is None
