"""Concept drift: the model's error against ground truth, when labels come back.

Everything else the worker watches is unsupervised: it sees the input move, not whether the model is still
right. When people (or a slower, better model) label some frames, the labels come back on the feedback topic
(:class:`core.contracts.Feedback`); :func:`frame_error` scores the model's prediction for that frame
against them and :class:`ConceptDrift` watches the stream of errors with River's ADWIN.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from streams.monitor.base import Change, Detector, Labelled, Observation, statistic
from streams.monitor.changepoint import Adwin

Box = tuple[float, float, float, float]


def _iou(a: Box, b: Box) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match(
    predicted: Sequence[tuple[str, Box]], truth: Sequence[tuple[str, Box | None]], iou: float = 0.5
) -> list[bool]:
    """Whether each predicted object matched a true one, in the order predicted.

    A true object with a box matches a predicted one of the same label whose box overlaps it by ``iou``
    (greedy, best overlap first); a true object without a box matches any predicted one of its label
    (image-level labels). Each object matches at most once.

    >>> match([("car", (0, 0, 10, 10)), ("car", (50, 50, 60, 60)), ("dog", (0, 0, 5, 5))], [("car", (1, 1, 10, 10))])
    [True, False, False]
    """
    hit = [False] * len(predicted)
    boxed = sorted(((t, b) for t, b in truth if b is not None), key=lambda tb: tb[0])
    for label, box in boxed:
        best, best_iou = None, iou
        for i in range(len(predicted)):
            if not hit[i] and predicted[i][0] == label:
                o = _iou(predicted[i][1], box)
                if o >= best_iou:
                    best, best_iou = i, o
        if best is not None:
            hit[best] = True
    for label, box in truth:
        if box is None:
            left = next((i for i in range(len(predicted)) if not hit[i] and predicted[i][0] == label), None)
            if left is not None:
                hit[left] = True
    return hit


def frame_error(
    predicted: Sequence[tuple[str, Box]], truth: Sequence[tuple[str, Box | None]], iou: float = 0.5
) -> float:
    """1 - F1 of the predicted objects against the true ones, 0 (all right) to 1 (all wrong), the objects
    matched by :func:`match`. A frame with nothing predicted and nothing true has error 0.

    >>> frame_error([("car", (0, 0, 10, 10))], [("car", (1, 1, 10, 10))])
    0.0
    >>> frame_error([("car", (0, 0, 10, 10))], [("car", (50, 50, 60, 60))])  # right label, wrong place
    1.0
    >>> round(frame_error([("car", (0, 0, 10, 10)), ("dog", (0, 0, 5, 5))], [("car", None)]), 3)
    0.333
    """
    return error_of(match(predicted, truth, iou), len(truth))


def error_of(hits: Sequence[bool], truths: int) -> float:
    """1 - F1 of predicted objects of which ``hits`` matched, against ``truths`` true objects (0 for none of
    either)."""
    if not hits and not truths:
        return 0.0
    return 1.0 - 2 * sum(map(bool, hits)) / (len(hits) + truths)


class ConceptDrift:
    """The model's error on labelled frames, against the camera's own reference error.

    The first ``reference`` errors give the reference mean. Every error then goes to ADWIN; at each change
    it finds, drift is declared if the mean of the last ``recent`` errors is at least ``min_increase`` above
    the reference, and cleared if it is back below half that margin. (ADWIN's own window still holds older
    errors when it signals, so its mean lags; the last few errors say which way the change went.)

    Parameters: reference (labelled frames), min_increase (error units, 0-1), recent (errors), delta
    (ADWIN's confidence).

    State: the reference mean, the recent errors and ADWIN's buckets (about 3 KB as JSON).

    >>> import random
    >>> rng = random.Random(7)
    >>> d = ConceptDrift(reference=100, min_increase=0.1)
    >>> errors = [min(1, max(0, rng.gauss(0.2, 0.05))) for _ in range(300)]
    >>> errors += [min(1, max(0, rng.gauss(0.45, 0.05))) for _ in range(100)]  # the model starts failing
    >>> errors += [min(1, max(0, rng.gauss(0.2, 0.05))) for _ in range(200)]  # and recovers (retrained)
    >>> flags = [d.update(e).drift_detected for e in errors]
    >>> print([i for i in range(1, len(flags)) if flags[i] != flags[i - 1]])  # raised, cleared
    [338, 506]
    """

    def __init__(self, reference: int = 100, min_increase: float = 0.1, recent: int = 30, delta: float = 0.002):
        self.reference_size = reference
        self.min_increase = min_increase
        self.recent: deque[float] = deque(maxlen=recent)
        self.adwin = Adwin(delta=delta)
        self.n = 0
        self.reference_mean = 0.0
        self.drifted = False
        self.recent_mean = 0.0

    @property
    def ready(self) -> bool:
        return self.n >= self.reference_size

    def update(self, error: float) -> ConceptDrift:
        self.n += 1
        if not self.ready:
            self.reference_mean += (float(error) - self.reference_mean) / self.n
        self.recent.append(round(float(error), 4))
        self.adwin.update(error)
        if self.ready and self.adwin.drift_detected:
            self.recent_mean = sum(self.recent) / len(self.recent)
            if self.recent_mean >= self.reference_mean + self.min_increase:
                self.drifted = True
            elif self.recent_mean < self.reference_mean + self.min_increase / 2:
                self.drifted = False
        return self

    @property
    def drift_detected(self) -> bool:
        return self.drifted

    def to_dict(self) -> dict:
        return {
            "reference_size": self.reference_size,
            "min_increase": self.min_increase,
            "recent": list(self.recent),
            "recent_size": self.recent.maxlen,
            "adwin": self.adwin.to_dict(),
            "n": self.n,
            "reference_mean": self.reference_mean,
            "drifted": self.drifted,
            "recent_mean": self.recent_mean,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> ConceptDrift:
        obj = cls(reference=d["reference_size"], min_increase=d["min_increase"], recent=d["recent_size"])
        obj.recent.extend(d["recent"])
        obj.adwin = Adwin.from_dict(d["adwin"])
        obj.n, obj.reference_mean = int(d["n"]), float(d["reference_mean"])
        obj.drifted, obj.recent_mean = bool(d["drifted"]), float(d["recent_mean"])
        return obj


class ConceptDetector(Detector):
    """:class:`ConceptDrift` as a detector of the camera's monitor: ``concept_drift`` (``label_error``), from the
    frames that come back labelled."""

    name = "concept"

    def __init__(self, inner: ConceptDrift):
        self.inner = inner

    @classmethod
    def new(cls, settings: Any, camera_id: str) -> ConceptDetector | None:
        return cls(ConceptDrift(reference=settings.concept_reference)) if settings.concept_reference else None

    def observe(self, obs: Observation) -> list[Change]:
        if not isinstance(obs, Labelled):
            return []
        c = self.inner
        was = c.drift_detected
        c.update(obs.error)
        if c.drift_detected == was:
            return []
        text = (
            f"the model's error on labelled frames rose to {c.recent_mean:.2f} (reference {c.reference_mean:.2f})"
            if c.drift_detected
            else f"the model's error on labelled frames is back to {c.recent_mean:.2f}"
        )
        status = "raised" if c.drift_detected else "resolved"
        return [Change("concept_drift", "label_error", status, c.recent_mean, c.reference_mean + c.min_increase, text)]

    def statistics(self) -> list:
        """``adwin``, ``error``: recent error rate on labelled frames, and the rate that counts as drift."""
        k = self.inner
        if not k.ready:
            return []
        recent = sum(k.recent) / len(k.recent) if k.recent else 0.0
        return statistic("adwin", "error", recent, k.reference_mean + k.min_increase, k.drift_detected, len(k.recent))

    def essential(self) -> object:
        return self.inner.drift_detected

    def to_dict(self) -> dict:
        return self.inner.to_dict()

    @classmethod
    def from_dict(cls, d: dict) -> ConceptDetector:
        return cls(ConceptDrift.from_dict(d))
