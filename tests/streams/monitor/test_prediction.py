from __future__ import annotations

import math
import random

import pytest

from streams.monitor.prediction import ClassDistributionDrift, ConfidenceDrift

from .conftest import through_json


def feed(d, frames):
    for f in frames:
        d.update(f)
    return d


def test_chi_square_statistic_is_the_textbook_one():
    # reference 50 car / 50 person, window 20 / 80: expected 35 / 65 in each row,
    # chi2 = 2 x 15^2 / 35 + 2 x 15^2 / 65 = 19.78 with 1 degree of freedom
    d = ClassDistributionDrift(reference=100, window=100, every=1, alpha=0.001)
    feed(d, [["car"]] * 50 + [["person"]] * 50 + [["car"]] * 20 + [["person"]] * 80)
    assert d.statistic == pytest.approx(2 * 225 / 35 + 2 * 225 / 65)
    assert d.p_value == pytest.approx(math.erfc(math.sqrt(d.statistic / 2)))  # chi2(1) survival
    assert d.drift_detected


def test_a_class_the_reference_never_saw_is_counted_not_divided_by():
    d = ClassDistributionDrift(reference=100, window=100, every=1, alpha=0.001)
    feed(d, [["car"]] * 50 + [["person"]] * 50 + [["car", "dog"]] * 50)
    names, ref, win = d.table()
    assert names == ["car", "dog", "person"] and ref == [50, 0, 50] and win == [50, 50, 0]
    assert d.drift_detected and math.isfinite(d.statistic)


def test_rare_classes_are_pooled_as_other():
    d = ClassDistributionDrift(reference=10, window=10, every=1, min_count=5)
    feed(d, [["car"]] * 8 + [["bus"], ["truck"]] + [["car"]] * 9 + [["bus"]])
    assert d.table() == (["car", "other"], [8, 2], [9, 1])


def test_one_class_everywhere_gives_no_test_and_no_drift():
    d = feed(ClassDistributionDrift(reference=10, window=10, every=1), [["car"]] * 30)
    assert (d.statistic, d.p_value, d.drift_detected) == (0.0, 1.0, False)


def test_the_same_mix_does_not_alarm_and_frames_without_detections_change_nothing():
    rng = random.Random(8)
    d = ClassDistributionDrift(reference=300, window=200, every=5, alpha=0.001)
    for _ in range(1000):
        d.update(rng.choices(["car", "person", "bicycle"], weights=[5, 3, 1], k=2))
        assert not d.drift_detected
    before = d.to_dict()
    d.update([])
    assert {**d.to_dict(), "since_test": 0} == {**before, "since_test": 0}


def test_class_drift_state_survives_a_json_round_trip():
    rng = random.Random(9)
    a = ClassDistributionDrift(reference=100, window=80, every=3)
    for _ in range(200):
        a.update(rng.choices(["car", "person"], k=2))
    b = ClassDistributionDrift.from_dict(through_json(a.to_dict()))
    for _ in range(100):
        labels = rng.choices(["car", "person", "dog"], k=2)
        assert a.update(labels).p_value == b.update(labels).p_value
    assert len(a.window) == 80


def test_confidence_z_score_is_the_textbook_one():
    d = ConfidenceDrift(reference=100, window=50, z=4.0, min_delta=0.05)
    feed(d, [[0.6, 0.8]] * 50 + [[0.5]] * 50)  # reference mean 0.7, sd 0.1005; window mean 0.5
    sd = math.sqrt(sum((x - 0.7) ** 2 for x in [0.6, 0.8] * 50) / 99)
    assert d.delta == pytest.approx(-0.2)
    assert d.z_score == pytest.approx(-0.2 / (sd * math.sqrt(1 / 50 + 1 / 100)))
    assert d.drift_detected


def test_a_significant_but_tiny_confidence_change_is_ignored():
    d = ConfidenceDrift(reference=1000, window=1000, z=4.0, min_delta=0.05)
    feed(d, [[0.69, 0.71]] * 500 + [[0.67, 0.69]] * 500)  # delta -0.02 with a z of about -45
    assert abs(d.z_score) > 4 and not d.drift_detected


def test_confidence_drift_waits_for_a_full_window_and_round_trips():
    d = ConfidenceDrift(reference=10, window=10)
    feed(d, [[0.9]] * 10 + [[0.1]] * 9)
    assert d.z_score == 0.0 and not d.drift_detected
    e = ConfidenceDrift.from_dict(through_json(d.to_dict()))
    assert d.update([0.1]).drift_detected and e.update([0.1]).drift_detected
    assert e.z_score == d.z_score
