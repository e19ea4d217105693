"""Performance without labels: the precision a camera's detections are expected to have, from their scores.

Most frames never come back labelled, but every detection carries the model's confidence. Following NannyML's
confidence-based performance estimation (CBPE), a detection of score ``s`` is right with probability ``p(s)``,
so the expected precision of a set of detections is the mean of their ``p(s)``. A model's raw scores are not
probabilities (the small detectors' are far too hopeful: NanoDet-m's mean score on the demo footage is about
0.4 where about 0.17 of its boxes are right against YOLOv4-tiny's), so ``p`` is **calibrated on the labelled
frames** that come back on the feedback topic (:class:`Calibration`): per confidence bin of 0.05, the share of
labelled detections that matched a true object (the matching of :func:`streams.monitor.concept.match`, IoU
0.5), shrunk toward the bin's raw confidence by a Beta prior worth :data:`PRIOR` labels, made non-decreasing
by isotonic regression (pool-adjacent-violators). Without labels the estimate is the raw mean confidence.

:class:`ExpectedPrecision` estimates the expected precision over the camera's recent frames with detections,
with an interval, against the camera's reference (its first frames' detections, valued with the calibration
of now, so that only a change of the scores moves the difference), and holds it as dropped when it falls by
``drop`` or more. It also keeps the precision, recall and F1 measured on the recent labelled frames, beside
what it expected of the same detections (estimated before their labels were counted), so that the estimate
can be judged where labels exist. CBPE assumes that the link between score and correctness holds: a new kind
of scene where the model is as confident and more often wrong is concept drift, for the labels to show
(:mod:`streams.monitor.concept`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from streams.monitor.base import Change, Detector, Frame, Labelled, Observation, statistic
from streams.monitor.prediction import centring_shrinkage, persistence, variance_factor
from streams.monitor.state import StateError, flag, integer, mapping, number, numbers

STATE_VERSION = 1
BINS = 20  # confidence bins of 0.05 from 0 to 1
PRIOR = 4.0  # the raw confidence weighs as much as this many labelled detections in each bin
Z = 1.96  # the interval's normal quantile: 95 %
MIN_DETECTIONS = 30  # detections a window needs for an estimate
LABELLED_FRAMES = 200  # the recent labelled frames the measured precision, recall and F1 are taken over
MAX_LABELS = 20_000  # labelled detections the calibration holds: beyond, its counts are halved (it forgets)
EVERY = 10  # frames with detections between two estimates of the window (one costs about 0.6 ms at 300 frames)


def bin_of(score: float) -> int:
    """The confidence bin of ``score``: 0 for [0, 0.05), ..., 19 for [0.95, 1]."""
    return min(BINS - 1, max(0, int(float(score) * BINS)))


def pav(values: Sequence[float], weights: Sequence[float]) -> list[tuple[float, float, int]]:
    """Isotonic (non-decreasing) least-squares fit of ``values`` with ``weights`` by pool-adjacent-violators:
    its blocks as (value, weight, length), in order. Written out rather than taken from scikit-learn: twenty
    bins are a loop of a few lines, and the worker does not depend on scikit-learn.

    >>> [(round(v, 2), w, n) for v, w, n in pav([0.1, 0.5, 0.3, 0.8], [1, 1, 1, 2])]
    [(0.1, 1, 1), (0.4, 2, 2), (0.8, 2, 1)]
    """
    blocks: list[list[float]] = []  # [weighted sum, weight, length]
    for v, w in zip(values, weights, strict=True):
        blocks.append([v * w, w, 1])
        while len(blocks) > 1 and blocks[-2][0] * blocks[-1][1] > blocks[-1][0] * blocks[-2][1]:
            s, ww, n = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += ww
            blocks[-1][2] += n
    return [(s / w if w else 0.0, w, int(n)) for s, w, n in blocks]


class Calibration:
    """The chance that a detection of a given score is right, learned from labelled detections.

    Per bin ``b`` of :data:`BINS`, ``labelled[b]`` detections of which ``hits[b]`` matched a true object. The
    curve is the posterior mean of each bin under a Beta prior of weight :data:`PRIOR` whose mean is the bin's
    middle score scaled by the ratio of all hits to all labelled scores (that ratio itself shrunk toward 1 by
    :data:`PRIOR` labels), ``(hits + PRIOR * prior) / (labelled + PRIOR)``, made non-decreasing by :func:`pav` over
    the bins from the lowest that holds a detection (below it lie scores the deployment threshold drops, which
    must not pull the curve); a pooled block's uncertainty is the Beta posterior's variance of its pooled
    counts. Few labels leave it near the raw score; many, at the measured share.

    >>> c = Calibration()
    >>> for _ in range(100):
    ...     c.add(0.62, False)
    >>> for _ in range(25):
    ...     c.add(0.62, True)
    >>> round(c.curve()[0][bin_of(0.62)], 2), round(Calibration().curve()[0][bin_of(0.62)], 3)
    (0.2, 0.625)
    >>> Calibration.from_dict(c.to_dict()).to_dict() == c.to_dict()
    True
    """

    def __init__(self) -> None:
        self.labelled = [0.0] * BINS
        self.hits = [0.0] * BINS
        self.lowest = BINS  # the lowest bin a detection was seen in
        self._curve: tuple[list[float], list[int], list[float]] | None = None  # until a count changes

    @property
    def labels(self) -> int:
        return round(sum(self.labelled))

    def see(self, score: float) -> None:
        b = bin_of(score)
        if b < self.lowest:
            self.lowest, self._curve = b, None

    def add(self, score: float, hit: bool) -> None:
        """One labelled detection: its score, and whether it matched a true object."""
        b = bin_of(score)
        self.see(score)
        self._curve = None
        self.labelled[b] += 1
        self.hits[b] += bool(hit)
        if sum(self.labelled) > MAX_LABELS:
            self.labelled = [n / 2 for n in self.labelled]
            self.hits = [k / 2 for k in self.hits]

    def curve(self) -> tuple[list[float], list[int], list[float]]:
        """Per bin, the calibrated chance and the pooled block it belongs to; per block, the variance of its
        chance. Bins below the lowest seen keep their raw middle score (a block each). Computed once per change
        of the counts."""
        if self._curve is None:
            self._curve = self._fit()
        return self._curve

    def _fit(self) -> tuple[list[float], list[int], list[float]]:
        mids = [(b + 0.5) / BINS for b in range(BINS)]
        # the prior of a bin: its middle score scaled by the ratio of all hits to all labelled scores (a model
        # whose scores promise twice what it finds is taken at half its word where a bin has no labels yet)
        scored = sum(n * m for n, m in zip(self.labelled, mids, strict=True))
        ratio = (sum(self.hits) + PRIOR) / (scored + PRIOR)
        prior = [min(1.0, m * ratio) for m in mids]
        lo = min(self.lowest, BINS - 1)
        p, block, var = prior[:lo], list(range(lo)), [0.0] * lo
        posterior = [(self.hits[b] + PRIOR * prior[b]) / (self.labelled[b] + PRIOR) for b in range(lo, BINS)]
        weights = [self.labelled[b] + PRIOR for b in range(lo, BINS)]
        for value, weight, length in pav(posterior, weights):
            p += [value] * length
            block += [len(var)] * length
            var.append(value * (1 - value) / (weight + 1))
        return p, block, var

    def to_dict(self) -> dict:
        return {"labelled": list(self.labelled), "hits": list(self.hits), "lowest": self.lowest}

    @classmethod
    def from_dict(cls, d: Mapping) -> Calibration:
        d = mapping(d, "calibration")
        c = cls()
        c.labelled = numbers(d["labelled"], "labelled", BINS, lo=0)
        c.hits = numbers(d["hits"], "hits", BINS, lo=0)
        if len(c.labelled) != BINS or len(c.hits) != BINS:
            raise StateError(f"calibration: {BINS} bins expected")
        if any(k > n for k, n in zip(c.hits, c.labelled, strict=True)):
            raise StateError("calibration: more hits than labelled detections in a bin")
        c.lowest = integer(d["lowest"], "lowest", 0, BINS)
        return c


def estimate(frames: Sequence[Sequence[int]], calibration: Calibration) -> tuple[float, float, float]:
    """The expected precision of the detections of ``frames`` (each a list of score bins, in order) and its
    interval (low, high), or NaNs without detections.

    The estimate is the mean calibrated chance of the detections. Its interval covers the precision these
    detections really had: the calibration's own uncertainty (each pooled block's Beta variance, weighted by
    its share of the detections) plus the chance of each detection being right, ``sum p (1 - p) / n**2``,
    scaled up by how much more consecutive frames vary together than independent detections would
    (:func:`_design_effect`: one passer-by's detections are all right or all wrong together).

    >>> c = Calibration()
    >>> est, low, high = estimate([[bin_of(0.5)] * 2] * 50, c)
    >>> round(est, 3), low < est < high
    (0.525, True)
    """
    p, block, var = calibration.curve()
    n = sum(len(f) for f in frames)
    if not n:
        return math.nan, math.nan, math.nan
    est = sum(p[b] for f in frames for b in f) / n
    share: dict[int, float] = {}
    for f in frames:
        for b in f:
            share[block[b]] = share.get(block[b], 0.0) + 1 / n
    var_cal = sum(w * w * var[k] for k, w in share.items())
    var_chance = sum(p[b] * (1 - p[b]) for f in frames for b in f) / n**2
    return est, *_interval(est, var_cal + var_chance * _design_effect(frames, p, est, n))


def _design_effect(frames: Sequence[Sequence[int]], p: Sequence[float], est: float, n: int) -> float:
    """How many times more the mean chance of these detections varies than that of as many independent ones,
    at least 1 (at most ``n``: all alike), as :mod:`streams.monitor.prediction` measures it for the scores:
    the frames' residuals (their chances' sum less their detections times the estimate), their dispersion
    within a frame and their persistence across frames (:func:`~streams.monitor.prediction.persistence`,
    lags up to 64 frames). Batch means over blocks of consecutive frames were tried first: with ten blocks of
    30 frames and objects that stay 10 to 60 frames, neighbouring blocks share objects and the 95 % interval
    covered 72 % of simulated windows; this covers 93 % (tests/streams/monitor/test_performance.py)."""
    residuals = np.array([sum(p[b] for b in f) - len(f) * est for f in frames])
    spread = sum((p[b] - est) ** 2 for f in frames for b in f)
    if len(frames) < 3 or spread <= 1e-12:
        return 1.0
    r = persistence(residuals[:, None])
    dispersion = float((residuals**2).sum()) / (spread * centring_shrinkage(r, len(frames)))
    return min(max(1.0, max(1.0, dispersion) * variance_factor(r, len(frames))), float(n))


def _interval(est: float, variance: float) -> tuple[float, float]:
    half = Z * math.sqrt(max(0.0, variance))
    return max(0.0, est - half), min(1.0, est + half)


class ExpectedPrecision:
    """The expected precision of a camera's recent detections against its reference, and the precision, recall
    and F1 measured where labels come back.

    - ``window``: the last frames with detections, each kept as its detections' score bins; the estimate and
      its interval are :func:`estimate` of them, once they hold :data:`MIN_DETECTIONS` detections, taken
      every ``every`` frames with detections (and on a restore).
    - ``reference``: the first ``reference_frames`` frames with detections, kept as a histogram of score bins
      and valued with the calibration of now (a calibration learned since moves the reference and the window
      alike).
    - Dropped when the estimate is ``drop`` or more below the reference's; no longer once it is back within
      ``drop / 2``. (The interval is not part of the rule: at a change the batch means see the window's two
      halves differ and widen it, which would only delay the alert; the window's length keeps chance out.)
    - Labelled frames (:meth:`label`): each detection's score and whether it matched a true object, and the
      number of true objects. What the estimate expected of them is taken first, then they join the
      calibration; the last :data:`LABELLED_FRAMES` are summed.

    State: the calibration (two lists of 20), the reference histogram, the window's score bins and the labelled
    frames' counts: a few KB as JSON.

    >>> import random
    >>> rng = random.Random(3)
    >>> e = ExpectedPrecision(reference=200, window=100, drop=0.1)
    >>> for i in range(600):
    ...     mean = 0.7 if i < 400 else 0.45  # the scores fall at frame 400
    ...     if e.update([min(1, max(0, rng.gauss(mean, 0.08))) for _ in range(2)]).dropped:
    ...         print(i, round(e.reference_estimate, 2), round(e.estimate, 2))
    ...         break
    449 0.69 0.58
    """

    def __init__(self, reference: int = 1000, window: int = 300, drop: float = 0.1, every: int = EVERY):
        self.reference_frames = reference
        self.window_frames = window
        self.drop = drop
        self.every = every
        self.since_check = 0  # frames with detections since the last estimate; not persisted
        self.calibration = Calibration()
        self.reference = [0] * BINS
        self.seen = 0  # frames with detections seen, up to reference_frames
        self.window: deque[list[int]] = deque(maxlen=window)
        self.labelled: deque[list[float]] = deque(maxlen=LABELLED_FRAMES)  # [hits, predicted, true, expected]
        self.estimate = self.low = self.high = math.nan
        self.dropped = False

    @property
    def ready(self) -> bool:
        return self.seen >= self.reference_frames

    @property
    def reference_estimate(self) -> float:
        p = self.calibration.curve()[0]
        n = sum(self.reference)
        return sum(k * p[b] for b, k in enumerate(self.reference)) / n if n else math.nan

    @property
    def floor(self) -> float:
        """The expected precision the window must fall to for a drop."""
        return self.reference_estimate - self.drop

    def update(self, scores: Sequence[float]) -> ExpectedPrecision:
        """Feed one frame's detection scores (a frame without detections adds nothing)."""
        if not len(scores):
            return self
        bins = [bin_of(s) for s in scores]
        for s in scores:
            self.calibration.see(s)
        if not self.ready:
            self.seen += 1
            for b in bins:
                self.reference[b] += 1
        self.window.append(bins)
        self.since_check += 1
        if self.since_check >= self.every:
            self._check()
        return self

    def label(self, scores: Sequence[float], hits: Sequence[bool], truths: int) -> ExpectedPrecision:
        """One labelled frame: its detections' scores, whether each matched a true object, and how many true
        objects it has."""
        p = self.calibration.curve()[0]
        expected = sum(p[bin_of(s)] for s in scores)
        self.labelled.append([float(sum(map(bool, hits))), float(len(scores)), float(truths), round(expected, 4)])
        for s, hit in zip(scores, hits, strict=True):
            self.calibration.add(s, hit)
        return self

    def _check(self) -> None:
        self.since_check = 0
        if sum(len(f) for f in self.window) < MIN_DETECTIONS:
            self.estimate = self.low = self.high = math.nan
            return
        self.estimate, self.low, self.high = estimate(list(self.window), self.calibration)
        if not self.ready:
            return
        if self.dropped:
            self.dropped = self.estimate < self.reference_estimate - self.drop / 2
        else:
            self.dropped = self.estimate <= self.floor

    def measured(self) -> dict[str, float] | None:
        """Over the recent labelled frames: ``precision``, ``recall``, ``f1`` and ``expected`` (the expected
        precision of the same detections, before their labels counted), and ``frames``; None without any."""
        if not self.labelled:
            return None
        hits, predicted, true, expected = (sum(x) for x in zip(*self.labelled, strict=True))
        return {
            "precision": hits / predicted if predicted else math.nan,
            "recall": hits / true if true else math.nan,
            "f1": 2 * hits / (predicted + true) if predicted + true else math.nan,
            "expected": expected / predicted if predicted else math.nan,
            "frames": float(len(self.labelled)),
        }

    def to_dict(self) -> dict:
        return {
            "version": STATE_VERSION,
            "reference_frames": self.reference_frames,
            "window_frames": self.window_frames,
            "drop": self.drop,
            "calibration": self.calibration.to_dict(),
            "reference": list(self.reference),
            "seen": self.seen,
            "window": [list(f) for f in self.window],
            "labelled": [list(x) for x in self.labelled],
            "dropped": self.dropped,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> ExpectedPrecision:
        d = mapping(d, "performance")
        if d.get("version") != STATE_VERSION:
            raise StateError(f"performance state version {d.get('version')!r}, this build reads {STATE_VERSION}")
        obj = cls(
            reference=integer(d["reference_frames"], "reference_frames", 1, 10**6),
            window=integer(d["window_frames"], "window_frames", 1, 10**6),
            drop=number(d["drop"], "drop", 0, 1),
        )
        obj.calibration = Calibration.from_dict(d["calibration"])
        obj.reference = [integer(k, "reference") for k in d["reference"]]
        if len(obj.reference) != BINS:
            raise StateError(f"reference: {BINS} bins expected")
        obj.seen = integer(d["seen"], "seen")
        for f in d["window"][-obj.window_frames :]:
            obj.window.append([integer(b, "window", 0, BINS - 1) for b in f])
        for x in d["labelled"][-LABELLED_FRAMES:]:
            obj.labelled.append(numbers(x, "labelled", 4, lo=0))
        obj._check()
        obj.dropped = flag(d["dropped"], "dropped")
        return obj


class PerformanceDetector(Detector):
    """:class:`ExpectedPrecision` as a detector of the camera's monitor: ``prediction_drift``,
    ``expected_precision``, from every frame's scores and the labelled frames' matches."""

    name = "performance"

    def __init__(self, inner: ExpectedPrecision):
        self.inner = inner

    @classmethod
    def new(cls, settings: Any, camera_id: str) -> PerformanceDetector | None:
        s = settings
        if not s.performance_reference:
            return None
        return cls(ExpectedPrecision(reference=s.performance_reference, window=s.performance_window,
                                     drop=s.performance_drop))  # fmt: skip

    def observe(self, obs: Observation) -> list[Change]:
        e = self.inner
        was = e.dropped
        if isinstance(obs, Frame):
            e.update([round(float(v), 4) for v in obs.scores])
        elif isinstance(obs, Labelled) and len(obs.scores) == len(obs.hits):
            e.label([round(float(v), 4) for v in obs.scores], obs.hits, obs.truths)
        if e.dropped == was:
            return []
        ref = e.reference_estimate
        text = (
            f"expected precision {e.estimate:.2f} ({e.low:.2f}-{e.high:.2f}), reference {ref:.2f}"
            f" (calibrated on {e.calibration.labels} labelled detections)"
        )
        status = "raised" if e.dropped else "resolved"
        return [Change("prediction_drift", "expected_precision", status, e.estimate, e.floor, text)]

    def statistics(self) -> list:
        """``cbpe``: ``expected_precision`` (drifts below the threshold: the reference's less the drop) and its
        interval (``expected_precision_low``, ``_high``), and where labels came back ``measured_precision``
        (threshold: the expected precision of the same detections) and ``measured_f1``."""
        e = self.inner
        if not e.ready or math.isnan(e.estimate):
            return []
        n = sum(len(f) for f in e.window)
        out = statistic("cbpe", "expected_precision", e.estimate, e.floor, e.dropped, n)
        out += statistic("cbpe", "expected_precision_low", e.low, e.floor, e.dropped, n)
        out += statistic("cbpe", "expected_precision_high", e.high, e.floor, e.dropped, n)
        m = e.measured()
        if m is not None:
            frames = int(m["frames"])
            out += statistic("cbpe", "measured_precision", m["precision"], m["expected"], False, frames)
            out += statistic("cbpe", "measured_f1", m["f1"], 0.0, False, frames)
        return out

    def configure(self, settings: Any) -> None:
        self.inner.drop = settings.performance_drop

    def essential(self) -> object:
        return self.inner.dropped

    def to_dict(self) -> dict:
        return self.inner.to_dict()

    @classmethod
    def from_dict(cls, d: dict) -> PerformanceDetector:
        return cls(ExpectedPrecision.from_dict(d))
