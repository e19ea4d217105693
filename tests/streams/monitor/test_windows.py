from __future__ import annotations

import random

import pytest

from streams.monitor import windows
from streams.monitor.windows import KSWindow, MultiKS, holm

from .conftest import through_json


def gauss(rng: random.Random, n: int, mean: float = 0.0, sd: float = 1.0) -> list[float]:
    return [rng.gauss(mean, sd) for _ in range(n)]


def test_separated_samples_give_the_maximum_statistic():
    d = KSWindow(reference=10, window=10, every=10, alpha=0.01)
    for x in [3, 7, 1, 9, 0, 5, 2, 8, 4, 6] + [100] * 10:  # an unordered (independent-looking) reference
        d.update(x)
    assert d.statistic == 1.0
    assert d.p_value < 1e-4
    assert d.drift_detected


def test_a_swaying_view_is_not_drift_but_a_shift_beyond_its_sway_is():
    """A hand-held or wind-rocked view: the signal swings slowly (each value near the last). Windows of it
    differ by phase alone; counted as independent values they would look drifted at once."""
    import math

    def sway(start: int, n: int, offset: float = 0.0) -> list[float]:
        return [100 + offset + 10 * math.sin(i / 40) + rng.gauss(0, 1) for i in range(start, start + n)]

    rng = random.Random(12)
    d = KSWindow(reference=400, window=200, every=10, alpha=1e-3)
    for x in sway(0, 400):
        d.update(x)
    tested = [d.update(x).p_value for x in sway(400, 800)]
    assert min(tested) > 1e-3 and not d.drift_detected
    from scipy import stats

    plain = [stats.ks_2samp(d.reference, sway(start, 200)).pvalue for start in range(400, 1200, 50)]
    assert min(plain) < 1e-3  # the uncorrected test alarms on the same kind of windows
    assert any(d.update(x).drift_detected for x in sway(1200, 200, offset=40))  # the whole view brighter


def test_a_steady_stream_does_not_alarm_and_a_shift_does():
    rng = random.Random(11)
    d = KSWindow(reference=200, window=100, every=10, alpha=1e-4)
    assert not any(d.update(x).drift_detected for x in gauss(rng, 2000))
    assert any(d.update(x).drift_detected for x in gauss(rng, 200, mean=1.5))


def test_the_test_runs_every_k_values_only(monkeypatch):
    calls = []
    real = windows.stats.ks_2samp
    monkeypatch.setattr(windows.stats, "ks_2samp", lambda a, b: calls.append(len(b)) or real(a, b))
    d = KSWindow(reference=50, window=20, every=5)
    for x in range(150):
        d.update(float(x % 7))
    # window full at its 20th value, then a test at every 5th of the 80 values that follow
    assert len(calls) == 1 + 80 // 5
    assert set(calls) == {20}


def test_warmup_values_are_not_part_of_the_reference():
    d = KSWindow(reference=3, window=2, warmup=2)
    for x in [99, 99, 1, 2, 3, 4]:
        d.update(x)
    assert d.reference == [1.0, 2.0, 3.0]
    assert list(d.window) == [4.0]


def test_an_operator_reference_replaces_the_learned_one():
    d = KSWindow(reference=5, window=5, every=5, alpha=0.01)
    for _ in range(10):
        d.update(0.0)
    d.set_reference([float(x) for x in range(100)])
    assert d.ready and d.reference_size == 100 and not d.window
    for x in range(5):
        d.update(float(x * 20))
    assert not d.drift_detected


def test_state_survives_a_json_round_trip_and_stays_bounded():
    rng = random.Random(1)
    a = KSWindow(reference=100, window=50, every=7)
    for x in gauss(rng, 1000):
        a.update(x)
    b = KSWindow.from_dict(through_json(a.to_dict()))
    for x in gauss(rng, 300, mean=0.5):
        assert (a.update(x).p_value, a.statistic) == (b.update(x).p_value, b.statistic)
    assert len(a.reference) == 100 and len(a.window) == 50


def test_holm_steps_down_and_stops_at_the_first_survivor():
    assert holm({"a": 0.001, "b": 0.02, "c": 0.04}, alpha=0.05) == {"a", "b", "c"}
    assert holm({"a": 0.001, "b": 0.03, "c": 0.04}, alpha=0.05) == {"a"}
    assert holm({"a": 0.02, "b": 0.02}, alpha=0.05) == {"a", "b"}  # 0.02 <= 0.025, then 0.02 <= 0.05
    assert holm({"a": 0.03}, alpha=0.05) == {"a"}
    assert holm({}, alpha=0.05) == set()


def test_a_p_value_that_passes_alone_fails_among_three():
    assert holm({"a": 0.0004}, alpha=0.001) == {"a"}
    assert holm({"a": 0.0004, "b": 0.5, "c": 0.6}, alpha=0.001) == set()


def test_multi_ks_names_the_signal_that_drifted_only():
    rng = random.Random(2)
    d = MultiKS(["brightness", "contrast"], reference=200, window=100, every=10, alpha=0.001)
    for i in range(700):
        d.update({"brightness": rng.gauss(100 + (30 if i >= 400 else 0), 8), "contrast": rng.gauss(50, 5)})
    assert d.drifted == {"brightness"}
    assert d.statistics["brightness"] > 0.5
    assert d.p_values["contrast"] > 0.001


def test_multi_ks_skips_missing_values():
    d = MultiKS(["frame_diff", "blur"], reference=3, window=2, every=1)
    d.update({"frame_diff": None, "blur": 1.0})
    d.update({"blur": 2.0})
    assert d.windows["frame_diff"].reference == []
    assert d.windows["blur"].reference == [1.0, 2.0]


def test_multi_ks_state_survives_a_json_round_trip():
    rng = random.Random(3)
    a = MultiKS(["x", "y"], reference=50, window=30, every=5)
    for _ in range(200):
        a.update({"x": rng.random(), "y": rng.random()})
    b = MultiKS.from_dict(through_json(a.to_dict()))
    for _ in range(100):
        v = {"x": rng.random() + 0.5, "y": rng.random()}
        assert a.update(v).drifted == b.update(v).drifted
    assert a.p_values == b.p_values


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError):
        KSWindow(alpha=0)
    with pytest.raises(ValueError):
        KSWindow(window=0)
