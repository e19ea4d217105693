"""Prediction drift: what the model says about a camera, against what it said in the camera's reference.

:class:`ClassDistributionDrift` compares the mix of detected classes, :class:`ConfidenceDrift` the mean
detection score. Both take one frame's detections per update, so a frame without detections costs nothing
and adds nothing (the number of detections per frame is a signal of its own in ``FrameMetrics``).

Detections are not independent samples: the same parked car, the same passer-by, is detected in tens of
frames in a row, with the same class and nearly the same score, and a group of people shows as several
"person" detections in one frame. Counted as independent, 200 detections of a busy street (20 frames of 10
objects) look like strong evidence when they are a dozen objects, and the tests raise, resolve and raise
again as objects come and go. So both tests measure, on their reference (the class mix on its window
too), how much more a window's counts or scores vary than independent detections would (the *design
effect*: :func:`design_effect`) and divide their statistic by it (Rao and Scott's first-order correction
of a chi-square on clustered samples), and both windows span a minimum of frames as well as of
detections, so that a busy scene still sees enough objects come and go. Their thresholds come from a
false-alarm budget, an expected run length in frames between false alarms on a clean camera
(``run_length``), not from a p-value taken one test at a time.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from scipy import stats

from streams.monitor.base import Change, Detector, Frame, Observation, flips, statistic
from streams.monitor.state import integer, mapping, number

STATE_VERSION = 2  # of both detectors' to_dict; a state without it (or another) is learned again
RUN_LENGTH = 500_000  # frames a clean camera runs, on average, between two false alarms of one detector
CHECKS_APART = 1  # frames between the confidence checks the budget is spent on: every frame, as they run
MAX_LAG = 64  # the longest lag, in frames with detections, at which persistence is measured
MAX_PERSISTENCE = 0.98  # cap on the AR(1) coefficient: at most a 1-in-99 effective share of a long window


def persistence(residuals: np.ndarray) -> float:
    """How long a frame's deviation from the mean persists, as the coefficient of an AR(1) process, 0 to
    :data:`MAX_PERSISTENCE`: the largest ``rho(j) ** (1 / j)`` over lags ``j`` of 1, 2, 4 ... 32 frames, where
    ``rho(j)`` is the autocorrelation of ``residuals`` (frames x series, each series of mean 0; pooled over
    the series) and counts only when above chance (``2 / sqrt(frames)``). At lag 1 this is the estimator of
    :func:`streams.monitor.windows.lag1_autocorrelation`; the longer lags find a slow swing (objects staying
    for tens of frames) under frame-to-frame noise (a missed detection here and there), which lag 1 alone
    reads as far less persistent than it is. Objects that come in episodes vary more over blocks of frames
    than even those lags show: the batch means of :func:`_batch_persistence` count when larger.

    >>> rng = np.random.default_rng(0)
    >>> persistence(rng.normal(size=(300, 1)))  # independent frames
    0.0
    >>> slow = np.convolve(rng.normal(size=340), np.ones(40), "valid")[:300]  # each value a 40-frame sum
    >>> 0.9 < persistence((slow - slow.mean())[:, None] + rng.normal(0, 3, size=(300, 1))) < 0.99
    True
    """
    x = np.asarray(residuals, float)
    x = x.reshape(len(x), -1)
    frames, energy = len(x), float((x * x).sum())
    if frames < 3 or energy <= 1e-12 * x.size:
        return 0.0
    lags = [2**k for k in range(int(math.log2(MAX_LAG)) + 1) if 2**k <= max(1, frames // 4)]
    rhos: dict[int, float] = {}
    for lag in lags:  # up to the first lag within chance of 0: a cycle (car, person, car...) is no persistence
        rho = float((x[lag:] * x[:-lag]).sum()) / energy
        if rho <= 2 / math.sqrt(frames):
            break
        rhos[lag] = rho
    r = MAX_PERSISTENCE if rhos else 0.0
    for _ in range(20):  # the residuals' mean was taken from the same frames: undo its shrinkage
        c = min(0.9, variance_factor(r, frames) / frames)
        r = min(MAX_PERSISTENCE, max([(rho * (1 - c) + c) ** (1 / lag) for lag, rho in rhos.items()], default=0.0))
    return max(r, _batch_persistence(x, energy))


def _batch_persistence(x: np.ndarray, energy: float) -> float:
    """The AR(1) coefficient whose :func:`variance_factor` over ``B`` frames matches the variance of the
    sums of ``x`` over blocks of ``B`` consecutive frames (batch means), the largest over ``B`` of 16, 32
    and 64 (:data:`MAX_LAG`) with at least 8 blocks, counted only when clearly above chance (three
    standard errors of a variance over that many blocks). The autocorrelations of
    :func:`persistence` see how a frame follows the last; objects that come in episodes (a quiet minute,
    then three passers-by in a row, each detected in most of 60 frames, missed in some) vary far more
    over a block of frames than those short lags imply, and the block sums see it."""
    frames = len(x)
    best = 0.0
    for b in (2**k for k in range(4, int(math.log2(MAX_LAG)) + 1)):
        blocks = frames // b
        if blocks < 8:
            break
        sums = x[: blocks * b].reshape(blocks, b, -1).sum(axis=1)
        sums -= sums.mean(axis=0)  # the blocks' mean, not the frames': the remainder is left out
        factor = float((sums * sums).sum()) / (blocks - 1) / (b * energy / frames)
        if factor <= 1 + 3 * math.sqrt(2 / (blocks - 1)):  # within chance of independent frames
            continue
        lo, hi = 0.0, MAX_PERSISTENCE  # variance_factor rises with r: bisect
        for _ in range(30):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if variance_factor(mid, b) < factor else (lo, mid)
        best = max(best, lo)
    return best


def centring_shrinkage(r: float, frames: int) -> float:
    """The share of the variance that taking the mean over the same ``frames`` frames leaves (below 1):
    about ``1 - variance_factor(r, frames) / frames``, at least 0.1."""
    return max(0.1, 1 - variance_factor(r, frames) / frames)


def variance_factor(r: float, frames: int) -> float:
    """How many times the variance of a sum of ``frames`` consecutive values of an AR(1) process of
    coefficient ``r`` exceeds that of as many independent ones: ``1 + 2 sum_j (1 - j / frames) r ** j``.
    At most ``frames`` (all values alike); about ``(1 + r) / (1 - r)`` for a window much longer than the
    persistence.

    >>> variance_factor(0.0, 100), variance_factor(0.9, 1), round(variance_factor(0.9, 1000), 1)
    (1.0, 1.0, 18.8)
    """
    if r <= 0 or frames <= 1:
        return 1.0
    return (1 + r) / (1 - r) - 2 * r * (1 - r**frames) / (frames * (1 - r) ** 2)


def design_effect(dispersion: float, r: float, frames: int) -> float:
    """The variance of a window's mean over ``frames`` frames against that of as many independent
    detections, at least 1: the within-frame ``dispersion`` (clustering: several of one class in a frame)
    times the persistence across frames (:func:`variance_factor`)."""
    return max(1.0, max(1.0, dispersion) * variance_factor(r, frames))


def class_clustering(frames: list[Mapping[str, int]]) -> tuple[float, float]:
    """``(dispersion, persistence)`` of the class counts of ``frames`` (one mapping of class to count per
    frame with detections, in order), against their own mix: how much more than independent detections
    the counts vary within a frame (several of one class together), and how long a frame's deviation
    persists across frames (:func:`persistence`). With one class only how busy frames are can be measured.

    >>> rng = np.random.default_rng(1)
    >>> mixed = [{"car": int(c), "person": 3 - int(c)} for c in rng.integers(0, 4, 200)]
    >>> round(class_clustering(mixed)[1], 2)  # each frame drawn afresh
    0.0
    >>> visits = [{"person": 2}] * 40 + [{"car": 1}] * 60 + [{"person": 2}] * 40 + [{"car": 1}] * 60
    >>> class_clustering(visits)[1] > 0.9  # the same objects for tens of frames
    True
    """
    names = sorted({n for f in frames for n in f})
    counts = np.array([[f.get(n, 0) for n in names] for f in frames], float).reshape(len(frames), len(names))
    total = counts.sum()
    if not len(frames) or total <= 0:
        return 1.0, 0.0
    per_frame = counts.sum(axis=1)
    if len(names) > 1:
        p = counts.sum(axis=0) / total
        residuals = (counts - per_frame[:, None] * p) / np.sqrt(p)  # weighted as the chi-square weighs them
        dispersion = float((residuals**2).sum()) / (total * (len(names) - 1))
    else:
        residuals, dispersion = per_frame - per_frame.mean(), 1.0
    r = persistence(residuals)
    return dispersion / centring_shrinkage(r, len(frames)), r


class _FrameWindow:
    """The recent frames' detections: at least ``detections`` of them and ``frames`` frames with some."""

    def __init__(self, detections: int, frames: int):
        self.detections, self.frames = detections, frames
        self.items: deque[list] = deque()
        self.total = 0

    def append(self, item: list) -> None:
        self.items.append(item)
        self.total += len(item)
        while len(self.items) > self.frames and self.total - len(self.items[0]) >= self.detections:
            self.total -= len(self.items.popleft())

    @property
    def full(self) -> bool:
        return self.total >= self.detections and len(self.items) >= self.frames

    def flat(self) -> list:
        return [x for item in self.items for x in item]


def _params(d: Mapping) -> dict:
    """The parameters of a saved state (any version), checked."""
    return {
        "reference": integer(d["reference_size"], "reference_size", 1, 10**6),
        "window": integer(d["window_size"], "window_size", 1, 10**6),
        "reference_frames": integer(d.get("reference_frames", 0), "reference_frames", 0, 10**6),
        "window_frames": integer(d.get("window_frames", 0), "window_frames", 0, 10**6),
        "run_length": integer(d.get("run_length", RUN_LENGTH), "run_length", 1, 10**12),
    }


class ClassDistributionDrift:
    """Chi-square test of the classes detected in the recent frames against those of the reference frames.

    The reference is the first frames with detections, until they hold ``reference`` detections and number
    ``reference_frames`` (default ``reference // 2``); the window, the latest frames holding at least
    ``window`` detections and numbering at least ``window_frames`` (default ``window // 2``). Their class
    counts form a 2 x K contingency table tested with ``scipy.stats.chi2_contingency`` (not the window
    against fixed reference proportions: the reference is a sample too, and a class it never saw would get
    an expected count of 0). Classes rare in both (fewer than ``min_count`` detections together) are pooled
    into one "other" column. Tested every ``every`` frames.

    The statistic is divided by the design effect (module docstring; :attr:`design_effect`), so that
    detections of one object in many frames count for what they are: the reference's is measured on its
    frames, the window's is the larger of the one the reference's clustering gives it and the one measured
    on the window's own frames (:func:`class_clustering`), in the half of the window that shows less of it.
    A scene's pace changes: a reference that saw one passer-by stop for a minute knows less about visits
    than a window that saw three, and three visits are three observations, however many frames they fill;
    a steady new mix, drawn afresh each frame, keeps a window effect near 1. The half that shows less: a
    change of mix inside the window is one step, which leaves one half of the window steady and so costs
    the test nothing, where objects that come and go show in both halves. Drift
    when the corrected p-value is below :attr:`alpha`: the configured ``alpha``, or ``every / run_length``
    when that is smaller, so that a clean camera runs ``run_length`` frames on average between false alarms
    even if successive tests were independent (overlapping windows make them less so, and the run longer).

    Parameters: reference, window (detections), reference_frames, window_frames (frames with detections),
    every (frames), alpha (0-1), min_count, run_length (frames).

    State: the reference counts (one int per class seen), while learning the reference's frames, and the
    window's labels: about 4 KB as JSON for a window of 200 short labels, more on a busy scene (at most
    ``window_frames`` frames of its detections).

    >>> import random
    >>> rng = random.Random(2)
    >>> d = ClassDistributionDrift(reference=300, window=200, every=5, reference_frames=100, window_frames=60)
    >>> for i in range(400):
    ...     mix = ["car", "person", "bicycle"] if i < 200 else ["person", "person", "dog"]
    ...     if d.update(rng.choices(mix, k=3)).drift_detected:
    ...         print(i, round(d.statistic), f"{d.p_value:.0e}", round(d.design_effect, 1))
    ...         break
    216 29 2e-06 1.1
    """

    def __init__(
        self,
        reference: int = 500,
        window: int = 200,
        every: int = 10,
        alpha: float = 0.001,
        min_count=5,
        *,
        reference_frames: int | None = None,
        window_frames: int | None = None,
        run_length: int = RUN_LENGTH,
    ):
        self.reference_size = reference
        self.window_size = window
        self.reference_frames = reference if reference_frames is None else reference_frames
        self.window_frames = window if window_frames is None else window_frames
        self.every = every
        self._alpha = alpha
        self.min_count = min_count
        self.run_length = run_length
        self.reference: Counter[str] = Counter()
        self.n_reference = 0
        self.learning: list[dict[str, int]] = []  # the reference's frames, until it is complete
        self.dispersion = 1.0  # within-frame clustering of classes in the reference (1: independent)
        self.persistence = 0.0  # AR(1) coefficient of the reference's per-frame class counts
        self.reference_span = 0  # frames with detections in the reference
        self.frames = _FrameWindow(window, self.window_frames)
        self.since_test = 0
        self.statistic = 0.0  # corrected chi-square statistic of the last test
        self.p_value = 1.0
        self.design_effect = 1.0  # of the last test

    @property
    def alpha(self) -> float:
        """The level the p-value is held to: the configured alpha, or ``every / run_length`` if smaller."""
        return min(self._alpha, self.every / self.run_length)

    @alpha.setter
    def alpha(self, value: float) -> None:
        self._alpha = value

    @property
    def ready(self) -> bool:
        return self.n_reference >= self.reference_size and not self.learning

    @property
    def window(self) -> list[str]:
        """The window's labels, oldest first."""
        return self.frames.flat()

    def update(self, labels: Iterable[str]) -> ClassDistributionDrift:
        """Feed one frame's detected class labels (an empty frame is fine)."""
        labels = [str(label) for label in labels]
        if not self.ready:
            if labels:
                self.learning.append(dict(Counter(labels)))
                self.reference.update(labels)
                self.n_reference += len(labels)
                if self.n_reference >= self.reference_size and len(self.learning) >= self.reference_frames:
                    self._learn()
            return self
        if labels:
            self.frames.append(labels)
        self.since_test += 1
        if self.frames.full and self.since_test >= self.every:
            self.test()
        return self

    def _learn(self) -> None:
        """Measure the reference's design effect, then forget its frames."""
        self.dispersion, self.persistence = class_clustering(self.learning)
        self.reference_span, self.learning = len(self.learning), []

    def table(self) -> tuple[list[str], list[int], list[int]]:
        """Classes (rare ones pooled as "other"), reference counts, window counts."""
        recent = Counter(self.window)
        names, ref, win = [], [], []
        other_ref = other_win = 0
        for name in sorted(set(self.reference) | set(recent)):
            r, w = self.reference[name], recent[name]
            if r + w >= self.min_count:
                names.append(name)
                ref.append(r)
                win.append(w)
            else:
                other_ref, other_win = other_ref + r, other_win + w
        if other_ref + other_win:
            names.append("other")
            ref.append(other_ref)
            win.append(other_win)
        return names, ref, win

    def test(self) -> tuple[float, float]:
        self.since_test = 0
        names, ref, win = self.table()
        if len(names) < 2:  # one class in both: nothing to compare
            self.statistic, self.p_value, self.design_effect = 0.0, 1.0, 1.0
            return self.statistic, self.p_value
        n_ref, n_win = sum(ref), sum(win)
        frames = len(self.frames.items)
        d_ref = design_effect(self.dispersion, self.persistence, self.reference_span)
        items = [Counter(f) for f in self.frames.items]
        half = len(items) // 2
        own = min(design_effect(*class_clustering(part), frames) for part in (items[:half], items[half:]))
        d_win = max(design_effect(self.dispersion, self.persistence, frames), own)
        self.design_effect = (d_win / n_win + d_ref / n_ref) / (1 / n_win + 1 / n_ref)
        result = stats.chi2_contingency([ref, win], correction=False)
        self.statistic = float(result.statistic) / self.design_effect
        self.p_value = float(stats.chi2.sf(self.statistic, result.dof))
        return self.statistic, self.p_value

    @property
    def drift_detected(self) -> bool:
        return self.p_value < self.alpha

    def to_dict(self) -> dict:
        return {
            "version": STATE_VERSION,
            "reference_size": self.reference_size,
            "window_size": self.window_size,
            "reference_frames": self.reference_frames,
            "window_frames": self.window_frames,
            "every": self.every,
            "alpha": self._alpha,
            "min_count": self.min_count,
            "run_length": self.run_length,
            "reference": dict(self.reference),
            "n_reference": self.n_reference,
            "learning": self.learning,
            "dispersion": self.dispersion,
            "persistence": self.persistence,
            "reference_span": self.reference_span,
            "window": list(self.frames.items),
            "since_test": self.since_test,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "design_effect": self.design_effect,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> ClassDistributionDrift:
        """The detector ``d`` describes; a state of an older version (counted detections as independent)
        gives a detector with its parameters that learns its reference again."""
        d = mapping(d, "class_mix")
        p = _params(d)
        obj = cls(
            **p,
            every=integer(d["every"], "every", 1, 10**6),
            alpha=number(d["alpha"], "alpha", 0, 1),
            min_count=integer(d["min_count"], "min_count", 0, 10**6),
        )
        if d.get("version") != STATE_VERSION:
            return obj
        obj.reference = Counter({str(k): integer(v, "reference", 0) for k, v in mapping(d["reference"], "r").items()})
        obj.n_reference = integer(d["n_reference"], "n_reference")
        obj.learning = [{str(k): integer(v, "learning", 0) for k, v in mapping(f, "f").items()} for f in d["learning"]]
        obj.dispersion = number(d["dispersion"], "dispersion", 0)
        obj.persistence = number(d["persistence"], "persistence", 0, MAX_PERSISTENCE)
        obj.reference_span = integer(d["reference_span"], "reference_span")
        for frame in d["window"]:
            obj.frames.append([str(label) for label in frame])
        obj.since_test = integer(d["since_test"], "since_test")
        obj.statistic = number(d["statistic"], "statistic", 0)
        obj.p_value = number(d["p_value"], "p_value", 0, 1)
        obj.design_effect = number(d["design_effect"], "design_effect", 0)
        return obj


class ConfidenceDrift:
    """Mean detection score of the recent frames against that of the reference frames.

    The reference and the window are chosen as :class:`ClassDistributionDrift` chooses them. Drift when the
    difference of the means is both large, ``|delta| >= min_delta`` (score units), and unlikely by chance,
    ``|z| >= z``, with ``z = delta / (sd_ref * sqrt(d_win / n_win + d_ref / n_ref))``: ``d`` the design
    effect of each side (module docstring), measured on the reference, so that one object's score seen in 40
    frames counts for about one score. The floor ``min_delta`` stops a long window from flagging differences
    too small to matter. The bound on ``z`` is the configured one or the one the false-alarm budget sets,
    whichever is higher: a two-sided level of ``1 / run_length``, as the check runs at every frame.

    Parameters: reference, window (detections), reference_frames, window_frames (frames with detections),
    z, min_delta (score units, 0-1), run_length (frames).

    State: reference count, mean and sum of squares, while learning the reference's per-frame count and
    sum, and the window's scores: about 2 KB as JSON for 200, more on a busy scene.

    >>> import random
    >>> rng = random.Random(4)
    >>> d = ConfidenceDrift(reference=300, window=100, z=4.0, min_delta=0.05, reference_frames=150, window_frames=50)
    >>> for i in range(400):
    ...     mean = 0.7 if i < 200 else 0.55  # the model grows unsure at frame 200
    ...     if d.update([min(1.0, max(0.0, rng.gauss(mean, 0.1))) for _ in range(2)]).drift_detected:
    ...         print(i, round(d.delta, 3), round(d.threshold, 2))
    ...         break
    218 -0.053 4.75
    """

    def __init__(
        self,
        reference: int = 500,
        window: int = 200,
        z: float = 4.0,
        min_delta: float = 0.05,
        *,
        reference_frames: int | None = None,
        window_frames: int | None = None,
        run_length: int = RUN_LENGTH,
    ):
        self.reference_size = reference
        self.window_size = window
        self.reference_frames = reference if reference_frames is None else reference_frames
        self.window_frames = window if window_frames is None else window_frames
        self.z = z
        self.min_delta = min_delta
        self.run_length = run_length
        self.n_reference = 0
        self.reference_mean = 0.0
        self.reference_m2 = 0.0  # sum of squared deviations (Welford)
        self.learning: list[list[float]] = []  # (detections, sum of scores) of the reference's frames, until complete
        self.dispersion = 1.0
        self.persistence = 0.0
        self.reference_span = 0
        self.frames = _FrameWindow(window, self.window_frames)
        self.z_score = 0.0
        self.delta = 0.0  # window mean minus reference mean, score units

    @property
    def threshold(self) -> float:
        """The ``|z|`` drift needs: ``z``, or the budget's normal quantile if higher."""
        return max(self.z, float(stats.norm.isf(0.5 * CHECKS_APART / self.run_length)))

    @property
    def ready(self) -> bool:
        return self.n_reference >= self.reference_size and not self.learning

    @property
    def window(self) -> list[float]:
        """The window's scores, oldest first."""
        return self.frames.flat()

    def update(self, scores: Iterable[float]) -> ConfidenceDrift:
        """Feed one frame's detection scores (0-1; an empty frame is fine)."""
        scores = [float(s) for s in scores]
        if not scores:
            return self
        if not self.ready:
            for s in scores:
                self.n_reference += 1
                d = s - self.reference_mean
                self.reference_mean += d / self.n_reference
                self.reference_m2 += d * (s - self.reference_mean)
            self.learning.append([len(scores), sum(scores)])
            if self.n_reference >= self.reference_size and len(self.learning) >= self.reference_frames:
                self._learn()
            return self
        self.frames.append(scores)
        self._check()
        return self

    def _learn(self) -> None:
        """Measure the reference's design effect, then forget its frames."""
        n, total = np.array(self.learning, float).T
        residuals = total - n * self.reference_mean
        variance = self.reference_m2 / max(1, self.n_reference - 1)
        self.persistence = persistence(residuals)
        if variance > 0:
            shrinkage = centring_shrinkage(self.persistence, len(self.learning))
            self.dispersion = float((residuals**2).sum()) / (self.n_reference * variance * shrinkage)
        self.reference_span, self.learning = len(self.learning), []

    def _check(self) -> None:
        if not self.frames.full:
            self.z_score = self.delta = 0.0
            return
        window = self.window
        self.delta = sum(window) / len(window) - self.reference_mean
        sd = math.sqrt(self.reference_m2 / max(1, self.n_reference - 1)) or 1e-9
        d_ref = design_effect(self.dispersion, self.persistence, self.reference_span)
        d_win = design_effect(self.dispersion, self.persistence, len(self.frames.items))
        self.z_score = self.delta / (sd * math.sqrt(d_win / len(window) + d_ref / self.n_reference))

    @property
    def window_mean(self) -> float:
        window = self.window
        return sum(window) / len(window) if window else math.nan

    @property
    def drift_detected(self) -> bool:
        return abs(self.z_score) >= self.threshold and abs(self.delta) >= self.min_delta

    def to_dict(self) -> dict:
        return {
            "version": STATE_VERSION,
            "reference_size": self.reference_size,
            "window_size": self.window_size,
            "reference_frames": self.reference_frames,
            "window_frames": self.window_frames,
            "z": self.z,
            "min_delta": self.min_delta,
            "run_length": self.run_length,
            "n_reference": self.n_reference,
            "reference_mean": self.reference_mean,
            "reference_m2": self.reference_m2,
            "learning": self.learning,
            "dispersion": self.dispersion,
            "persistence": self.persistence,
            "reference_span": self.reference_span,
            "window": list(self.frames.items),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> ConfidenceDrift:
        """The detector ``d`` describes; a state of an older version (counted detections as independent)
        gives a detector with its parameters that learns its reference again."""
        d = mapping(d, "confidence")
        obj = cls(**_params(d), z=number(d["z"], "z", 0), min_delta=number(d["min_delta"], "min_delta", 0, 1))
        if d.get("version") != STATE_VERSION:
            return obj
        obj.n_reference = integer(d["n_reference"], "n_reference")
        obj.reference_mean = number(d["reference_mean"], "reference_mean", 0, 1)
        obj.reference_m2 = number(d["reference_m2"], "reference_m2", 0)
        obj.learning = [[number(x, "learning", 0) for x in f] for f in d["learning"]]
        obj.dispersion = number(d["dispersion"], "dispersion", 0)
        obj.persistence = number(d["persistence"], "persistence", 0, MAX_PERSISTENCE)
        obj.reference_span = integer(d["reference_span"], "reference_span")
        for frame in d["window"]:
            obj.frames.append([number(s, "window", 0, 1) for s in frame])
        obj._check()
        return obj


class ClassMixDetector(Detector):
    """:class:`ClassDistributionDrift` as a detector of the camera's monitor: ``prediction_drift``,
    ``class_mix``."""

    name = "classes"

    def __init__(self, inner: ClassDistributionDrift):
        self.inner = inner

    @classmethod
    def new(cls, settings: Any, camera_id: str) -> ClassMixDetector | None:
        s = settings
        if not s.prediction_reference:
            return None
        return cls(ClassDistributionDrift(reference=s.prediction_reference, window=s.prediction_window,
                                          alpha=s.prediction_alpha, reference_frames=s.prediction_reference_frames,
                                          window_frames=s.prediction_window_frames))  # fmt: skip

    def observe(self, obs: Observation) -> list[Change]:
        if not isinstance(obs, Frame):
            return []
        c = self.inner
        was = c.drift_detected
        c.update(obs.labels)
        if c.drift_detected == was:
            return []
        text = f"classes detected in the last {c.window_size} detections differ from the reference (p={c.p_value:.1e})"
        return [
            Change(*flip, c.p_value, c.alpha, text) for flip in flips(was, not was, "prediction_drift", "class_mix")
        ]

    def statistics(self) -> list:
        """``chi_square``, ``class_mix``: p-value of the classes detected against the reference, and alpha."""
        c = self.inner
        if not (c.ready and c.frames.full):  # the window holds at least window_size detections once full
            return []
        return statistic("chi_square", "class_mix", c.p_value, c.alpha, c.drift_detected, c.frames.total)

    def configure(self, settings: Any) -> None:
        self.inner.alpha = settings.prediction_alpha

    def essential(self) -> object:
        return self.inner.drift_detected

    def to_dict(self) -> dict:
        return self.inner.to_dict()

    @classmethod
    def from_dict(cls, d: dict) -> ClassMixDetector:
        return cls(ClassDistributionDrift.from_dict(d))


class ConfidenceDetector(Detector):
    """:class:`ConfidenceDrift` as a detector of the camera's monitor: ``prediction_drift``, ``confidence``."""

    name = "confidence"

    def __init__(self, inner: ConfidenceDrift):
        self.inner = inner

    @classmethod
    def new(cls, settings: Any, camera_id: str) -> ConfidenceDetector | None:
        s = settings
        if not s.prediction_reference:
            return None
        return cls(ConfidenceDrift(reference=s.prediction_reference, window=s.prediction_window,
                                   reference_frames=s.prediction_reference_frames,
                                   window_frames=s.prediction_window_frames))  # fmt: skip

    def observe(self, obs: Observation) -> list[Change]:
        if not isinstance(obs, Frame):
            return []
        c = self.inner
        was = c.drift_detected
        c.update([round(float(v), 4) for v in obs.scores])
        if c.drift_detected == was:
            return []
        text = f"mean detection score {c.window_mean:.2f}, reference {c.reference_mean:.2f} (z={c.z_score:.1f})"
        flip = flips(was, not was, "prediction_drift", "confidence")
        return [Change(*f, c.window_mean, c.reference_mean, text) for f in flip]

    def statistics(self) -> list:
        """``z_test``, ``confidence``: z-score of the mean detection score against the reference, and the z it
        must exceed (either way; the shift must also exceed the minimum delta)."""
        z = self.inner
        if not (z.ready and z.frames.full):
            return []
        return statistic("z_test", "confidence", z.z_score, z.z, z.drift_detected, z.frames.total)

    def essential(self) -> object:
        return self.inner.drift_detected

    def to_dict(self) -> dict:
        return self.inner.to_dict()

    @classmethod
    def from_dict(cls, d: dict) -> ConfidenceDetector:
        return cls(ConfidenceDrift.from_dict(d))
