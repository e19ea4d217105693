"""Prediction drift: what the model says about a camera, against what it said in the camera's reference.

:class:`ClassDistributionDrift` compares the mix of detected classes, :class:`ConfidenceDrift` the mean
detection score. Both take one frame's detections per update, so a frame without detections costs nothing
and adds nothing (the number of detections per frame is a signal of its own in ``FrameMetrics``).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable, Mapping

from scipy import stats


class ClassDistributionDrift:
    """Chi-square test of the classes of the last ``window`` detections against the first ``reference``.

    The two count vectors form a 2 x K contingency table tested with ``scipy.stats.chi2_contingency``,
    not the window against fixed reference proportions (``chisquare``): the reference is a sample too,
    and a class the reference never saw would get an expected count of 0 there. Classes that are rare in
    both (fewer than ``min_count`` detections together, zero counts included) are pooled into one
    "other" column, which keeps the chi-square approximation sound. Tested every ``every`` frames.

    Like every test on video, it assumes independent detections, which they are not (one parked bus
    is detected in 300 frames in a row): keep ``alpha`` small and the window long.

    Parameters: reference (detections), window (detections), every (frames), alpha (0-1), min_count.

    State: the reference counts (one int per class seen) and the window's labels: about 1.5 KB as JSON for
    a window of 200 short labels.

    >>> import random
    >>> rng = random.Random(2)
    >>> d = ClassDistributionDrift(reference=300, window=200, every=5, alpha=0.001)
    >>> for i in range(400):
    ...     mix = ["car", "person", "bicycle"] if i < 200 else ["person", "person", "dog"]
    ...     if d.update(rng.choices(mix, k=3)).drift_detected:
    ...         print(i, round(d.statistic), f"{d.p_value:.0e}")
    ...         break
    211 23 3e-05
    """

    def __init__(self, reference: int = 500, window: int = 200, every: int = 10, alpha: float = 0.001, min_count=5):
        self.reference_size = reference
        self.window_size = window
        self.every = every
        self.alpha = alpha
        self.min_count = min_count
        self.reference: Counter[str] = Counter()
        self.n_reference = 0
        self.window: deque[str] = deque(maxlen=window)
        self.since_test = 0
        self.statistic = 0.0  # chi-square statistic of the last test
        self.p_value = 1.0

    @property
    def ready(self) -> bool:
        return self.n_reference >= self.reference_size

    def update(self, labels: Iterable[str]) -> ClassDistributionDrift:
        """Feed one frame's detected class labels (an empty frame is fine)."""
        for label in labels:
            if self.ready:
                self.window.append(label)
            else:
                self.reference[label] += 1
                self.n_reference += 1
        if self.ready:
            self.since_test += 1
            if len(self.window) == self.window_size and self.since_test >= self.every:
                self.test()
        return self

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
            self.statistic, self.p_value = 0.0, 1.0
        else:
            result = stats.chi2_contingency([ref, win], correction=False)
            self.statistic, self.p_value = float(result.statistic), float(result.pvalue)
        return self.statistic, self.p_value

    @property
    def drift_detected(self) -> bool:
        return self.p_value < self.alpha

    def to_dict(self) -> dict:
        return {
            "reference_size": self.reference_size,
            "window_size": self.window_size,
            "every": self.every,
            "alpha": self.alpha,
            "min_count": self.min_count,
            "reference": dict(self.reference),
            "n_reference": self.n_reference,
            "window": list(self.window),
            "since_test": self.since_test,
            "statistic": self.statistic,
            "p_value": self.p_value,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> ClassDistributionDrift:
        obj = cls(d["reference_size"], d["window_size"], d["every"], d["alpha"], d["min_count"])
        obj.reference, obj.n_reference = Counter(d["reference"]), d["n_reference"]
        obj.window.extend(d["window"])
        obj.since_test, obj.statistic, obj.p_value = d["since_test"], d["statistic"], d["p_value"]
        return obj


class ConfidenceDrift:
    """Mean detection score of the last ``window`` detections against the first ``reference`` ones.

    Drift when the difference of the means is both large, ``|delta| >= min_delta`` (score units), and
    unlikely by chance, ``|z| >= z``, with ``z = delta / (sd_ref * sqrt(1/window + 1/reference))``.
    The floor ``min_delta`` stops a long window from flagging differences too small to matter; the
    ``z`` bound stops a short one from flagging noise. Checked at every frame (it costs a division).

    Parameters: reference (detections), window (detections), z, min_delta (score units, 0-1).

    State: reference count, mean and sum of squares, and the window's scores: about 2 KB as JSON for 200.

    >>> import random
    >>> rng = random.Random(4)
    >>> d = ConfidenceDrift(reference=300, window=100, z=4.0, min_delta=0.05)
    >>> for i in range(400):
    ...     mean = 0.7 if i < 200 else 0.55  # the model grows unsure at frame 200
    ...     if d.update([min(1.0, max(0.0, rng.gauss(mean, 0.1))) for _ in range(2)]).drift_detected:
    ...         print(i, round(d.delta, 3))
    ...         break
    218 -0.053
    """

    def __init__(self, reference: int = 500, window: int = 200, z: float = 4.0, min_delta: float = 0.05):
        self.reference_size = reference
        self.window_size = window
        self.z = z
        self.min_delta = min_delta
        self.n_reference = 0
        self.reference_mean = 0.0
        self.reference_m2 = 0.0  # sum of squared deviations (Welford)
        self.window: deque[float] = deque(maxlen=window)

    @property
    def ready(self) -> bool:
        return self.n_reference >= self.reference_size

    def update(self, scores: Iterable[float]) -> ConfidenceDrift:
        """Feed one frame's detection scores (0-1; an empty frame is fine)."""
        for s in scores:
            s = float(s)
            if self.ready:
                self.window.append(s)
            else:
                self.n_reference += 1
                d = s - self.reference_mean
                self.reference_mean += d / self.n_reference
                self.reference_m2 += d * (s - self.reference_mean)
        return self

    @property
    def window_mean(self) -> float:
        return sum(self.window) / len(self.window) if self.window else math.nan

    @property
    def delta(self) -> float:
        """Window mean minus reference mean, score units."""
        return self.window_mean - self.reference_mean if self.window else 0.0

    @property
    def z_score(self) -> float:
        if not self.ready or len(self.window) < self.window_size:
            return 0.0
        sd = math.sqrt(self.reference_m2 / max(1, self.n_reference - 1)) or 1e-9
        return self.delta / (sd * math.sqrt(1 / len(self.window) + 1 / self.n_reference))

    @property
    def drift_detected(self) -> bool:
        return abs(self.z_score) >= self.z and abs(self.delta) >= self.min_delta

    def to_dict(self) -> dict:
        return {
            "reference_size": self.reference_size,
            "window_size": self.window_size,
            "z": self.z,
            "min_delta": self.min_delta,
            "n_reference": self.n_reference,
            "reference_mean": self.reference_mean,
            "reference_m2": self.reference_m2,
            "window": list(self.window),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> ConfidenceDrift:
        obj = cls(d["reference_size"], d["window_size"], d["z"], d["min_delta"])
        obj.n_reference, obj.reference_mean, obj.reference_m2 = d["n_reference"], d["reference_mean"], d["reference_m2"]
        obj.window.extend(d["window"])
        return obj
