"""The expected precision without labels (streams.monitor.performance): the calibration, the interval and the
alert, on simulated detections whose correctness is known, and the detector in the camera's monitor."""

from __future__ import annotations

import itertools
import json
import math
import random

import numpy as np
import pytest

from core.contracts import FrameMetrics
from core.monitoring import MonitorSettings
from streams.monitor import camera
from streams.monitor.camera import CameraMonitor
from streams.monitor.concept import error_of, frame_error, match
from streams.monitor.performance import (
    BINS,
    Calibration,
    ExpectedPrecision,
    PerformanceDetector,
    bin_of,
    estimate,
    pav,
)
from streams.monitor.policy import explains
from streams.monitor.state import StateError
from tests.streams.monitor.conftest import through_json


def truth(score: float) -> float:
    """The simulated model's real chance of being right at ``score``: far below its score, as small detectors'."""
    return max(0.0, min(1.0, 1.6 * (score - 0.3)))


class Scene:
    """Frames of a camera where objects come and go: each stays for tens of frames with nearly the same score,
    right or wrong all the while (one passer-by misread stays misread), as on real footage."""

    def __init__(self, seed: int, mean: float = 0.55):
        self.rng = random.Random(seed)
        self.mean = mean
        self.objects: list[list] = []  # [frames left, score, right]

    def frame(self) -> tuple[list[float], list[bool]]:
        self.objects = [o for o in self.objects if o[0] > 0]
        if self.rng.random() < 0.08:
            score = min(0.99, max(0.35, self.rng.gauss(self.mean, 0.12)))
            self.objects.append([self.rng.randint(10, 60), score, self.rng.random() < truth(score)])
        for o in self.objects:
            o[0] -= 1
        scores = [min(0.99, max(0.35, o[1] + self.rng.gauss(0, 0.02))) for o in self.objects]
        return scores, [o[2] for o in self.objects]


def test_pav_gives_a_non_decreasing_fit_that_keeps_the_weighted_mean():
    rng = np.random.default_rng(0)
    for _ in range(50):
        values, weights = rng.random(20), rng.integers(1, 10, 20).astype(float)
        blocks = pav(values.tolist(), weights.tolist())
        fitted = [v for v, _, n in blocks for _ in range(n)]
        assert all(a <= b + 1e-12 for a, b in itertools.pairwise(fitted))
        assert sum(n for _, _, n in blocks) == 20
        assert np.isclose(np.dot(fitted, weights), np.dot(values, weights))
    assert [v for v, _, _ in pav([0.1, 0.2, 0.3], [1, 1, 1])] == [0.1, 0.2, 0.3]  # already monotone: kept


def test_the_calibration_learns_the_real_chance_and_stays_near_the_score_without_labels():
    c = Calibration()
    raw = c.curve()[0]
    assert raw[bin_of(0.62)] == pytest.approx(0.625)  # no labels: the raw score
    rng = random.Random(1)
    for _ in range(5000):
        s = rng.uniform(0.35, 1.0)
        c.add(s, rng.random() < truth(s))
    p, _, var = c.curve()
    assert c.lowest == bin_of(0.35) and all(a <= b for a, b in itertools.pairwise(p[c.lowest :]))
    for s in (0.45, 0.6, 0.8):
        assert abs(p[bin_of(s)] - truth((bin_of(s) + 0.5) / BINS)) < 0.06
    assert max(var) < 0.002
    few = Calibration()
    few.add(0.62, False)
    assert 0.4 < few.curve()[0][bin_of(0.62)] < 0.625  # one label moves it, a little


def test_the_interval_covers_the_precision_the_detections_really_had():
    covered, errors, trials = 0, [], 60
    for seed in range(trials):
        scene = Scene(seed)
        e = ExpectedPrecision(reference=200, window=300)
        for _ in range(600):  # a labelled stretch: every frame's detections come back with their truth
            scores, hits = scene.frame()
            e.update(scores)
            e.label(scores, hits, truths=sum(hits))
        window_hits = []
        for _ in range(300):  # then frames without labels; their truth is kept here to check
            scores, hits = scene.frame()
            e.update(scores)
            window_hits += hits
        if len(window_hits) < 30:
            continue
        real = sum(window_hits) / len(window_hits)
        covered += e.low <= real <= e.high
        errors.append(abs(e.estimate - real))
    assert covered >= 0.88 * len(errors), (covered, len(errors))  # a 95 % interval, on clustered detections
    assert np.median(errors) < 0.08


def test_a_drop_of_the_scores_raises_and_noise_does_not():
    quiet, dropped = ExpectedPrecision(reference=500, window=300), ExpectedPrecision(reference=500, window=300)
    for name, e in (("quiet", quiet), ("dropped", dropped)):
        scene = Scene(7)
        flags = []
        for i in range(6000):
            if name == "dropped" and i == 3000:
                scene.mean = 0.4  # the model grows unsure: fewer of its boxes are right
            scores, hits = scene.frame()
            if i < 1000:
                e.label(scores, hits, truths=sum(hits))
            flags.append(e.update(scores).dropped)
        if name == "quiet":
            assert not any(flags)
        else:
            assert not any(flags[:3000]) and any(flags[3000:])
            assert e.estimate <= e.reference_estimate - e.drop


def test_it_clears_with_hysteresis_once_the_scores_come_back():
    e = ExpectedPrecision(reference=100, window=100, drop=0.1)
    for _ in range(100):
        e.update([0.8, 0.7])
    for _ in range(100):
        e.update([0.5, 0.5])
    assert e.dropped
    for _ in range(100):
        e.update([0.8, 0.7])
    assert not e.dropped


def test_the_state_round_trips_through_json_and_a_hostile_one_is_refused():
    e = ExpectedPrecision(reference=50, window=40)
    scene = Scene(3)
    for _ in range(300):
        scores, hits = scene.frame()
        e.update(scores)
        e.label(scores, hits, sum(hits))
    back = ExpectedPrecision.from_dict(through_json(e.to_dict()))
    assert back.to_dict() == e.to_dict()
    # a restore estimates at once what the live one estimates at its next round
    e._check()
    assert (back.estimate, back.low, back.high) == (e.estimate, e.low, e.high)
    assert len(json.dumps(e.to_dict())) < 20_000
    more_hits_than_labels = {"labelled": [1] * BINS, "hits": [2] * BINS, "lowest": 0}
    for broken in ({**e.to_dict(), "version": 0}, {**e.to_dict(), "window": [[99]]},
                   {**e.to_dict(), "calibration": more_hits_than_labels}):  # fmt: skip
        with pytest.raises(StateError):
            ExpectedPrecision.from_dict(broken)


def test_estimate_without_detections_is_nan_and_one_frame_is_not_an_interval_of_zero():
    assert all(math.isnan(x) for x in estimate([], Calibration()))
    est, low, high = estimate([[bin_of(0.9)]] * 40, Calibration())
    assert low < est < high


def test_match_is_what_frame_error_counts():
    predicted = [("car", (0, 0, 10, 10)), ("car", (50, 50, 60, 60)), ("person", (0, 0, 5, 9))]
    truth_ = [("car", (49, 49, 60, 60)), ("person", None), ("dog", (0, 0, 3, 3))]
    hits = match(predicted, truth_)
    assert hits == [False, True, True]
    assert error_of(hits, len(truth_)) == frame_error(predicted, truth_) == pytest.approx(1 - 4 / 6)


def _metrics(seq: int, scores: list[float]) -> FrameMetrics:
    t = 1000.0 + seq / 5
    return FrameMetrics(
        frame_id=f"cam-1:0:{seq}", camera_id="cam-1", seq=seq, captured_at=t, processed_at=t, model_name="m",
        model_version="1", encoding="jpeg", bytes=1000, width=64, height=48, aspect_ratio=4 / 3, brightness=100.0,
        blur=100.0, inference_ms=1.0, detections=len(scores),
    )  # fmt: skip


def test_the_camera_monitor_feeds_it_frames_and_labels_and_relearns_it_for_another_model():
    s = MonitorSettings(warmup=5, motion_every=0, ks_reference=0, prediction_reference=0, embedding_reference=0,
                        concept_reference=0, performance_reference=50, performance_window=50)  # fmt: skip
    monitor = CameraMonitor.new("cam-1", s)
    rng = np.random.default_rng(0)
    alerts = []
    for seq in range(400):
        scores = [0.8, 0.75] if seq < 200 else [0.4, 0.36]
        m, small = _metrics(seq, scores), rng.integers(90, 110, (48, 64), dtype=np.uint8)  # a live, steady picture
        alerts += monitor.observe(m, small, m.captured_at, 0, 5.0, False, 0.0, ["car"] * 2, scores)
        if seq < 100:  # a quarter of the boxes are right: the scores promise far more
            alerts += monitor.observe_feedback(f"cam-1:0:{seq}", 0.5, 1000.0, "m", "1", scores=scores,
                                               hits=[seq % 2 == 0, False], truths=1)  # fmt: skip
    assert monitor.performance.calibration.labels == 200
    raised = [a for a in alerts if a.signal == "expected_precision" and a.status == "raised"]
    assert len(raised) == 1 and raised[0].type == "prediction_drift"
    stats = {x.signal: x for x in monitor.statistics() if x.detector == "cbpe"}
    assert set(stats) == {"expected_precision", "expected_precision_low", "expected_precision_high",
                          "measured_precision", "measured_f1"}  # fmt: skip
    assert stats["measured_precision"].statistic == pytest.approx(0.25)
    assert stats["expected_precision_low"].statistic <= stats["expected_precision"].statistic
    assert CameraMonitor.from_dict(through_json(monitor.to_dict()), s).performance.to_dict() == (
        monitor.performance.to_dict()
    )
    monitor.model = "m@1"
    resolved = monitor.switch_model("m@2", s, 2000.0, ("m", "1"))
    assert [a.signal for a in resolved] == ["expected_precision"]
    assert monitor.performance.calibration.labels == 0  # another model's scores mean something else
    # a label that comes back late, for a frame the model before predicted, is kept from the new calibration
    monitor.observe_feedback("cam-1:0:399", 0.5, 2001.0, "m", "2", scores=[0.4], hits=[True], truths=1,
                             predicted_by="m@1")  # fmt: skip
    assert monitor.performance.calibration.labels == 0 and not monitor.performance.labelled
    monitor.observe_feedback("cam-1:0:400", 0.5, 2002.0, "m", "2", scores=[0.4], hits=[True], truths=1,
                             predicted_by="m@2")  # fmt: skip
    assert monitor.performance.calibration.labels == 1


def test_a_fall_of_the_confidence_explains_the_expected_precision_and_the_model_owns_its_reference():
    assert explains("prediction_drift:confidence", "prediction_drift:expected_precision")
    assert explains("data_drift:brightness", "prediction_drift:expected_precision")
    assert camera.MODEL_DEPENDENT[PerformanceDetector.name] == ("prediction_drift:expected_precision",)
    assert PerformanceDetector.new(MonitorSettings(performance_reference=0), "c") is None
