from __future__ import annotations

import base64
import pickle
import random

import pytest
from river import drift

from streams.monitor.changepoint import Adwin
from streams.monitor.state import StateError

from .conftest import through_json


def step(seed: int, before: float, after: float, sd: float = 2.0) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(before, sd) for _ in range(300)] + [rng.gauss(after, sd) for _ in range(100)]


def test_a_step_is_found_soon_after_it_and_not_before():
    d = Adwin()
    found = [i for i, x in enumerate(step(7, 100, 90)) if d.update(x).drift_detected]
    assert found, "the step was missed"
    assert 300 <= found[0] <= 330
    assert d.n == 400 and d.detections == len(found)


def test_adwin_checks_at_every_value_by_default():
    assert Adwin().detector.clock == 1


@pytest.mark.parametrize("cls", [Adwin])
def test_state_survives_a_json_round_trip(cls):
    stream = step(5, 100, 80)
    a = cls()
    for x in stream[:250]:
        a.update(x)
    b = cls.from_dict(through_json(a.to_dict()))
    assert [a.update(x).drift_detected for x in stream[250:]] == [b.update(x).drift_detected for x in stream[250:]]
    assert b.n == a.n


def test_state_of_another_kind_is_refused():
    with pytest.raises(StateError):
        Adwin.from_dict({**Adwin().to_dict(), "kind": "page_hinkley"})


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("clock", [1, 32])
def test_adwin_finds_what_rivers_finds_value_for_value(seed, clock):
    rng = random.Random(seed)
    stream = [rng.gauss(0.2, 0.1) for _ in range(800)] + [rng.gauss(0.35, 0.1) for _ in range(700)]
    stream += [float(rng.random() < 0.3) for _ in range(1500)]
    ours, theirs = Adwin(clock=clock), drift.ADWIN(clock=clock)
    found = 0
    for x in stream:
        theirs.update(x)
        found += theirs.drift_detected
        assert ours.update(x).drift_detected == theirs.drift_detected
        assert (ours.detector.width, ours.detector.total, ours.detector.variance) == (
            theirs.width,
            theirs.total,
            theirs.variance,
        )
    assert ours.detections == found > 0


class _WritesAFile:
    """Unpickled, this would create ``path``: what a hostile changelog record would carry."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.mark.parametrize("cls", [Adwin])
def test_a_pickle_in_the_state_is_refused_and_never_run(cls, tmp_path):
    marker = tmp_path / "ran"
    payload = base64.b64encode(pickle.dumps(_WritesAFile(marker))).decode()
    state = cls().update(1.0).to_dict()
    for hostile in ({**state, "state": payload}, {**state, "state": {"window": payload}}, payload):
        with pytest.raises(StateError):
            cls.from_dict(through_json(hostile) if isinstance(hostile, dict) else hostile)
    assert not marker.exists()


@pytest.mark.parametrize("cls", [Adwin])
def test_a_state_of_another_version_or_with_fields_missing_is_refused(cls):
    state = cls().update(1.0).to_dict()
    with pytest.raises(StateError, match="version"):
        cls.from_dict({**state, "version": 0})
    without_version = dict(state)
    del without_version["version"]
    with pytest.raises(StateError, match="version"):
        cls.from_dict(without_version)
    for key in state["state"]:
        broken = {**state, "state": {k: v for k, v in state["state"].items() if k != key}}
        with pytest.raises(StateError):
            cls.from_dict(broken)


def test_adwin_state_with_wrong_shapes_or_values_is_refused():
    a = Adwin()
    for x in step(2, 1, 2)[:200]:
        a.update(x)
    state = through_json(a.to_dict())
    rows = state["state"]["rows"]
    for bad in (
        {"rows": [*rows, [[1.0], []]]},  # a total without its variance
        {"rows": [[[1.0] * 50, [0.0] * 50], *rows[1:]]},  # more buckets in a row than ADWIN keeps
        {"width": state["state"]["width"] + 1},  # not what its buckets hold
        {"total": float("nan")},
        {"tick": -1},
        {"rows": "AAAA"},
    ):
        with pytest.raises(StateError):
            Adwin.from_dict({**state, "state": {**state["state"], **bad}})
    with pytest.raises(StateError):
        Adwin.from_dict({**state, "params": {**state["params"], "clock": 0}})  # would divide by zero
    with pytest.raises(StateError):
        Adwin.from_dict({**state, "params": {**state["params"], "exec": "rm -rf /"}})
