from __future__ import annotations

import math
import random

import pytest

from streams.monitor.prediction import (
    ClassDistributionDrift,
    ClassMixDetector,
    ConfidenceDetector,
    ConfidenceDrift,
    persistence,
    variance_factor,
)

from .conftest import through_json

CLASSES = {"car": 0.5, "person": 0.3, "bicycle": 0.12, "dog": 0.08}
PEOPLE = {"person": 0.8, "bicycle": 0.12, "dog": 0.08}  # the cars replaced by people


DETECTIONS = {"reference_frames": 0, "window_frames": 0}  # sizes in detections only, as in the textbook


def feed(d, frames):
    for f in frames:
        d.update(f)
    return d


def busy_scene(frames, seed, rate=0.25, life=40, mix=CLASSES, change_at=None, new_mix=None, score_change=0.0):
    """A fixed camera's detections: objects enter (``rate`` a frame, Poisson), stay an exponential number of
    frames (mean ``life``), and are detected in 9 frames of 10, each with its own score (Beta(6, 3)) plus a
    little jitter: about ``rate x life`` objects in view and the same ones frame after frame. From frame
    ``change_at``, objects that enter are drawn from ``new_mix`` and every score moves by ``score_change``."""
    rng = random.Random(seed)

    def new_object(m):
        return [rng.choices(list(m), list(m.values()))[0], rng.betavariate(6, 3), rng.expovariate(1 / life)]

    objects = [new_object(mix) for _ in range(round(rate * life))]
    for t in range(frames):
        changed = change_at is not None and t >= change_at
        arrivals, p = -1, 1.0
        while p > math.exp(-rate):
            arrivals, p = arrivals + 1, p * rng.random()
        objects += [new_object(new_mix if changed and new_mix else mix) for _ in range(arrivals)]
        shift = score_change if changed else 0.0
        seen = [o for o in objects if rng.random() < 0.9]
        yield [o[0] for o in seen], [min(1.0, max(0.0, o[1] + shift + rng.gauss(0, 0.03))) for o in seen]
        for o in objects:
            o[2] -= 1
        objects = [o for o in objects if o[2] > 0]


def raises(detector, stream):
    """How many times ``detector`` raised over ``stream`` (labels or scores, one frame at a time)."""
    count, was = 0, False
    for frame in stream:
        now = detector.update(frame).drift_detected
        count, was = count + (now and not was), now
    return count


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_busy_clean_scene_whose_objects_stay_for_tens_of_frames_raises_nothing(seed):
    # About 9 detections a frame of the same 10 objects: 200 detections are 22 frames of one street, and
    # counted as independent they raised tens of times in these 12,000 frames.
    frames = list(busy_scene(12_000, seed))
    assert sum(len(labels) for labels, _ in frames) / len(frames) > 8
    classes, confidence = ClassDistributionDrift(), ConfidenceDrift()
    assert raises(classes, [labels for labels, _ in frames]) == 0
    assert raises(confidence, [scores for _, scores in frames]) == 0
    assert classes.ready and confidence.ready and classes.design_effect > 5  # it did test, and corrected


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cars_replaced_by_people_is_class_drift_within_a_window(seed):
    change_at = 1000  # the reference (500 frames) and a first full window are learned by then
    frames = busy_scene(2000, seed, rate=2.0, life=3, change_at=change_at, new_mix=PEOPLE)
    d = ClassDistributionDrift()
    at = next((t for t, (labels, _) in enumerate(frames) if d.update(labels).drift_detected), None)
    assert at is not None and change_at <= at <= change_at + 200, at  # 200 frames: the window's span


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_model_less_sure_of_itself_is_confidence_drift(seed):
    change_at = 1000
    frames = busy_scene(2000, seed, rate=2.0, life=3, change_at=change_at, score_change=-0.1)
    d = ConfidenceDrift()
    at = next((t for t, (_, scores) in enumerate(frames) if d.update(scores).drift_detected), None)
    assert at is not None and change_at <= at <= change_at + 200, at
    assert d.delta <= -0.05


def test_both_tests_report_their_statistics_once_their_window_is_full():
    # The windows hold at least their detections (and frames): more than window_size on a busy scene.
    frames = list(busy_scene(2000, 0, rate=2.0, life=3))
    classes, confidence = ClassDistributionDrift(), ConfidenceDrift()
    for labels, scores in frames[:1000]:
        classes.update(labels)
        confidence.update(scores)
    for labels, scores in frames[1000:]:
        classes.update(labels)
        confidence.update(scores)
        assert classes.frames.full and confidence.frames.full
        (chi,) = ClassMixDetector(classes).statistics()
        (z,) = ConfidenceDetector(confidence).statistics()
        assert (chi.signal, chi.statistic, chi.window) == ("class_mix", classes.p_value, len(classes.window))
        assert (z.signal, z.statistic, z.window) == ("confidence", confidence.z_score, len(confidence.window))
        assert chi.window >= classes.window_size and z.window >= confidence.window_size


def test_persistence_and_the_variance_of_a_window_of_correlated_frames():
    rng = random.Random(1)
    assert persistence([[rng.gauss(0, 1)] for _ in range(500)]) == 0.0
    assert variance_factor(0.5, 1) == 1.0
    # AR(1): 1 + 2 sum (1 - j/F) r^j by hand for F = 4
    assert variance_factor(0.5, 4) == pytest.approx(1 + 2 * (0.75 * 0.5 + 0.5 * 0.25 + 0.25 * 0.125))
    assert variance_factor(0.98, 10) <= 10  # never more than all frames alike


def test_chi_square_statistic_is_the_textbook_one_on_independent_frames():
    # reference 50 car / 50 person (alternating: no persistence), window 20 / 80 (one car in five frames:
    # no persistence either): expected 35 / 65 in each row, chi2 = 2 x 15^2 / 35 + 2 x 15^2 / 65 = 19.78
    # with 1 degree of freedom, divided by the design effect, here only the n / (n - 1) of a mean taken
    # from the same frames: the reference's 100, the window's half of 50 (its own clustering, measured on
    # each half: ClassDistributionDrift), averaged as the two samples are of equal size.
    d = ClassDistributionDrift(reference=100, window=100, every=1, alpha=0.001, run_length=10_000, **DETECTIONS)
    feed(d, [["car"], ["person"]] * 50 + [["car"], ["person"], ["person"], ["person"], ["person"]] * 20)
    assert d.persistence == 0.0 and d.design_effect == pytest.approx((100 / 99 + 50 / 49) / 2)
    assert d.statistic == pytest.approx((2 * 225 / 35 + 2 * 225 / 65) / d.design_effect)
    assert d.p_value == pytest.approx(math.erfc(math.sqrt(d.statistic / 2)))  # chi2(1) survival
    assert d.drift_detected


def test_objects_that_stay_in_the_window_count_as_few_observations_a_steady_new_mix_as_many():
    # The reference: a car or a person each frame, drawn afresh (no persistence). Then the same window
    # counts, 20 cars and 80 people, twice: as three runs (people for 40 frames, a car for 20, people for
    # 40: a few objects that stayed), and spread evenly (one car in every five frames: the mix changed).
    reference = [["car"], ["person"]] * 50
    visits = [["person"]] * 40 + [["car"]] * 20 + [["person"]] * 40
    spread = [["car"], ["person"], ["person"], ["person"], ["person"]] * 20
    kw = dict(reference=100, window=100, every=1, alpha=0.001, run_length=10_000, **DETECTIONS)
    bursty, steady = (
        feed(ClassDistributionDrift(**kw), reference + visits),
        feed(ClassDistributionDrift(**kw), reference + spread),
    )
    assert bursty.table() == steady.table()  # the same counts
    assert bursty.persistence == steady.persistence == 0.0  # the reference's pace: the same
    assert steady.drift_detected and steady.design_effect < 1.1
    assert not bursty.drift_detected and bursty.design_effect > 10  # its own frames: three long runs


def test_the_level_is_the_budgets_when_smaller_than_alpha():
    d = ClassDistributionDrift(every=10, alpha=0.001, run_length=500_000)
    assert d.alpha == pytest.approx(2e-5)
    d.alpha = 1e-6  # as the camera monitor sets it
    assert d.alpha == 1e-6 and d.to_dict()["alpha"] == 1e-6
    assert ConfidenceDrift(z=4.0, run_length=500_000).threshold == pytest.approx(
        4.75, abs=0.01
    )  # two-sided 1 / 500,000
    assert ConfidenceDrift(z=6.0).threshold == 6.0


def test_a_class_the_reference_never_saw_is_counted_not_divided_by():
    d = ClassDistributionDrift(reference=100, window=100, every=1, alpha=0.001, **DETECTIONS)
    feed(d, [["car"], ["person"]] * 50 + [["car", "dog"]] * 50)
    names, ref, win = d.table()
    assert names == ["car", "dog", "person"] and ref == [50, 0, 50] and win == [50, 50, 0]
    assert d.drift_detected and math.isfinite(d.statistic)


def test_rare_classes_are_pooled_as_other():
    d = ClassDistributionDrift(reference=10, window=10, every=1, min_count=5, **DETECTIONS)
    feed(d, [["car"]] * 8 + [["bus"], ["truck"]] + [["car"]] * 9 + [["bus"]])
    assert d.table() == (["car", "other"], [8, 2], [9, 1])


def test_one_class_everywhere_gives_no_test_and_no_drift():
    d = feed(ClassDistributionDrift(reference=10, window=10, every=1, **DETECTIONS), [["car"]] * 30)
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


@pytest.mark.parametrize("learned", [60, 400])  # while learning the reference, and after
def test_class_drift_state_survives_a_json_round_trip(learned):
    rng = random.Random(9)
    a = ClassDistributionDrift(reference=200, window=80, every=3)
    for _ in range(learned):
        a.update(rng.choices(["car", "person"], k=2))
    b = ClassDistributionDrift.from_dict(through_json(a.to_dict()))
    assert b.to_dict() == a.to_dict()
    for i in range(500):
        labels = rng.choices(["car", "person", "dog"] if i >= 300 else ["car", "person"], k=2)
        assert a.update(labels).p_value == b.update(labels).p_value
    assert a.drift_detected and b.to_dict() == a.to_dict()


def test_confidence_z_score_is_the_textbook_one_on_independent_frames():
    d = ConfidenceDrift(reference=100, window=50, z=4.0, min_delta=0.05, **DETECTIONS)
    feed(d, [[0.6, 0.8]] * 50 + [[0.5]] * 50)  # reference mean 0.7, sd 0.1005; window mean 0.5
    sd = math.sqrt(sum((x - 0.7) ** 2 for x in [0.6, 0.8] * 50) / 99)
    assert d.delta == pytest.approx(-0.2) and d.persistence == 0.0
    # each frame's two scores sum to the mean exactly: no clustering, the design effect is 1
    assert d.z_score == pytest.approx(-0.2 / (sd * math.sqrt(1 / 50 + 1 / 100)))
    assert d.drift_detected


def test_a_significant_but_tiny_confidence_change_is_ignored():
    d = ConfidenceDrift(reference=1000, window=1000, z=4.0, min_delta=0.05, **DETECTIONS)
    feed(d, [[0.69, 0.71]] * 500 + [[0.67, 0.69]] * 500)  # delta -0.02 with a z of about -45
    assert abs(d.z_score) > 4 and not d.drift_detected


def test_confidence_drift_waits_for_a_full_window_and_round_trips():
    d = ConfidenceDrift(reference=10, window=10, **DETECTIONS)
    feed(d, [[0.9], [0.8]] * 5 + [[0.1]] * 9)
    assert d.z_score == 0.0 and not d.drift_detected
    e = ConfidenceDrift.from_dict(through_json(d.to_dict()))
    assert e.to_dict() == d.to_dict()
    assert d.update([0.1]).drift_detected and e.update([0.1]).drift_detected
    assert e.z_score == d.z_score


def test_a_state_saved_before_frames_were_counted_is_learned_again_with_its_parameters():
    old_classes = {
        "reference_size": 300, "window_size": 100, "every": 5, "alpha": 0.01, "min_count": 5,
        "reference": {"car": 200, "person": 100}, "n_reference": 300, "window": ["car"] * 100,
        "since_test": 2, "statistic": 3.0, "p_value": 0.2,
    }  # fmt: skip
    old_confidence = {
        "reference_size": 300, "window_size": 100, "z": 4.0, "min_delta": 0.05, "n_reference": 300,
        "reference_mean": 0.7, "reference_m2": 3.0, "window": [0.7] * 100,
    }  # fmt: skip
    c = ClassDistributionDrift.from_dict(through_json(old_classes))
    z = ConfidenceDrift.from_dict(through_json(old_confidence))
    assert not c.ready and c.n_reference == 0 and (c.reference_size, c.every, c.to_dict()["alpha"]) == (300, 5, 0.01)
    assert not z.ready and z.n_reference == 0 and (z.reference_size, z.window_size) == (300, 100)
    feed(c, [["car", "person"]] * 400)  # and it learns, then tests, as a new one does
    feed(z, [[0.7, 0.6]] * 400)
    assert c.ready and z.ready and not c.drift_detected and not z.drift_detected
