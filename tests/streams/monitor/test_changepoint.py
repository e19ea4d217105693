from __future__ import annotations

import random

import pytest

from streams.monitor.changepoint import Adwin, Kswin, PageHinkley

from .conftest import through_json


def step(seed: int, before: float, after: float, sd: float = 2.0) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(before, sd) for _ in range(300)] + [rng.gauss(after, sd) for _ in range(100)]


@pytest.mark.parametrize(
    "make", [lambda: Adwin(), lambda: PageHinkley(threshold=30, delta=0.5), lambda: Kswin(alpha=0.0001, seed=1)]
)
def test_a_step_is_found_soon_after_it_and_not_before(make):
    d = make()
    found = [i for i, x in enumerate(step(7, 100, 90)) if d.update(x).drift_detected]
    assert found, "the step was missed"
    assert 300 <= found[0] <= 330
    assert d.n == 400 and d.detections == len(found)


def test_adwin_checks_at_every_value_by_default():
    assert Adwin().detector.clock == 1


def test_kswin_is_repeatable_with_its_seed():
    stream = step(3, 0, 1, sd=1)
    runs = [[i for i, x in enumerate(stream) if d.update(x).drift_detected] for d in (Kswin(seed=5), Kswin(seed=5))]
    assert runs[0] == runs[1]


@pytest.mark.parametrize("cls", [Adwin, PageHinkley, Kswin])
def test_state_survives_a_json_round_trip(cls):
    stream = step(5, 100, 80)
    a = cls()
    for x in stream[:250]:
        a.update(x)
    b = cls.from_dict(through_json(a.to_dict()))
    assert [a.update(x).drift_detected for x in stream[250:]] == [b.update(x).drift_detected for x in stream[250:]]
    assert b.n == a.n


def test_state_of_another_kind_is_refused():
    with pytest.raises(ValueError):
        Adwin.from_dict(PageHinkley().to_dict())


def test_unreadable_state_gives_a_fresh_detector():
    state = Adwin(delta=0.01).update(1.0).to_dict()
    state["state"] = "bm90IGEgcGlja2xl"  # base64 of "not a pickle"
    d = Adwin.from_dict(state)
    assert d.n == 0 and d.params["delta"] == 0.01
