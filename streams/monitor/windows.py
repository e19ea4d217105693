"""Sliding-window two-sample tests: a recent window of a signal against a fixed reference window.

:class:`KSWindow` watches one scalar signal with the Kolmogorov-Smirnov test; :class:`MultiKS` watches
several at once and corrects for testing them together.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from scipy import stats

from streams.monitor.base import Change, Detector, Frame, Observation, set_changes, statistic
from streams.monitor.signals import contrast_explains, light_explains

KEEP = 200  # values kept of a complete reference (its evenly spaced quantiles): the state's size


class KSWindow:
    """Two-sample Kolmogorov-Smirnov test of the last ``window`` values against a reference window.

    After ``warmup`` values are skipped (a camera settling), the next ``reference`` values become the
    reference, unless an operator sets one with :meth:`set_reference`. Then every ``every``-th value, once
    the sliding window is full, the window is compared with the reference (``scipy.stats.ks_2samp``, two
    sided); :attr:`drift_detected` holds while the last test's p-value is below ``alpha``.

    The test assumes independent values. Successive video frames are not (a parked lorry stays for a
    minute; a hand-held view sways), and on such values a plain KS p-value comes out far smaller than it
    should, hence false alarms. So each sample counts for its *effective* size, ``n (1 - r) / (1 + r)``
    with ``r`` the lag-1 autocorrelation, clipped to 0-0.9: the larger of the reference's (the camera's
    normal pace of change) and the window's own (:func:`own_lag1`). The window's counts because a scene's
    pace changes: lorries parked for a minute each in a view whose reference saw only passers-by make the
    window's values persistent, and 100 frames of them are a handful of observations, not 100. The
    p-value is the Kolmogorov distribution's at those sizes. An ``r`` within chance of 0 (below
    ``2 / sqrt(n)`` for ``n`` values) counts as 0; with both at 0 the values count as independent and keep
    scipy's exact p-value. (The integrated autocorrelation time, the sum over all lags, would also see a
    slow wander that frame-to-frame noise hides from ``r``, but on a street camera it leaves a 50-frame
    window too few effective values to tell even a new scene; a slow wander is for :class:`MultiKS`'s
    minimum move to absorb.) Testing every ``every`` values keeps the cost down (one test takes about
    0.5 ms for 200 against 100 values) and, with it, the chances of a false alarm.

    A long reference is kept as ``keep`` evenly spaced quantiles of its values once it is complete (its
    lag-1 autocorrelation measured first, on the values in their order), so that a reference of minutes
    costs no more state than one of seconds; the test then counts it as at most ``keep`` values, which
    makes it slightly more cautious than the full reference would.

    Parameters: reference (values), window (values), every (values between tests), alpha (0-1),
    warmup (values skipped before the reference starts), keep (values kept of a complete reference).

    State: the reference (at most ``keep`` floats once complete) and the window: about 5 KB as JSON for
    200 + 100.

    >>> import random
    >>> rng = random.Random(3)
    >>> d = KSWindow(reference=200, window=100, every=10, alpha=0.001)
    >>> stream = [rng.gauss(0, 1) for _ in range(500)] + [rng.gauss(1.5, 1) for _ in range(200)]
    >>> for i, x in enumerate(stream):
    ...     if d.update(x).drift_detected:
    ...         print(f"drift at {i}: D={d.statistic:.2f}, p={d.p_value:.1e}")
    ...         break
    drift at 559: D=0.33, p=8.0e-04
    """

    def __init__(
        self,
        reference: int = 200,
        window: int = 100,
        every: int = 10,
        alpha: float = 0.001,
        warmup: int = 0,
        keep: int = KEEP,
    ):
        if reference < 1 or window < 1 or every < 1 or warmup < 0 or keep < 2 or not 0 < alpha < 1:
            raise ValueError("reference, window and every must be positive, warmup >= 0, keep >= 2, 0 < alpha < 1")
        self.reference_size = reference
        self.window_size = window
        self.every = every
        self.alpha = alpha
        self.warmup = warmup
        self.keep = keep
        self._reset()

    def _reset(self) -> None:
        self.seen = 0  # values received, warm-up included
        self.reference: list[float] = []
        self.learned = False  # the reference is complete (and kept as at most ``keep`` quantiles)
        self._reference_array: np.ndarray | None = None  # the reference as scipy wants it, made once
        self.window: deque[float] = deque(maxlen=self.window_size)
        self.since_test = 0
        self.statistic = 0.0  # last test's KS statistic D, 0-1
        self.p_value = 1.0  # last test's p-value
        self._lag1: float | None = None  # the reference's lag-1 autocorrelation, clipped to 0-0.9, once known

    @property
    def ready(self) -> bool:
        """The reference is complete: values now go to the sliding window."""
        return self.learned

    def add_reference(self, x: float) -> None:
        """One more value of the reference being learned; the last one completes it."""
        self.reference.append(float(x))
        if len(self.reference) >= self.reference_size:
            self._complete()

    def _complete(self) -> None:
        values = np.asarray(self.reference, float)
        self._lag1 = lag1_autocorrelation(values)
        if len(values) > self.keep:
            self.reference = [round(float(v), 3) for v in np.quantile(values, (np.arange(self.keep) + 0.5) / self.keep)]
        self._reference_array = None
        self.learned = True

    def set_reference(self, values: Iterable[float]) -> KSWindow:
        """Replace the reference (an operator's choice, e.g. after a deliberate camera change); the sliding
        window starts over."""
        self.reference = [float(v) for v in values]
        self._reference_array = None
        self.reference_size = len(self.reference)
        self._complete()
        self.window.clear()
        self.since_test = 0
        self.statistic, self.p_value = 0.0, 1.0
        return self

    def update(self, x: float) -> KSWindow:
        self.seen += 1
        if self.seen <= self.warmup:
            return self
        if not self.ready:
            self.add_reference(x)
            return self
        self.window.append(float(x))
        self.since_test += 1
        if len(self.window) == self.window_size and self.since_test >= self.every:
            self.test()
        return self

    def test(self) -> tuple[float, float]:
        """Run the test now on the current window; return (statistic, p-value)."""
        self.since_test = 0
        if not self.ready or not self.window:
            return self.statistic, self.p_value
        if self._reference_array is None or len(self._reference_array) != len(self.reference):
            self._reference_array = np.asarray(self.reference)
        if self._lag1 is None:  # a state saved before the autocorrelation was kept: the values are in order
            self._lag1 = lag1_autocorrelation(self._reference_array)
        window = np.fromiter(self.window, float, len(self.window))
        result = stats.ks_2samp(self._reference_array, window)
        self.statistic, self.p_value = float(result.statistic), float(result.pvalue)
        # only an autocorrelation clearly above what independent values show by chance (2 / sqrt(n)); the
        # larger of the reference's and the window's (own_lag1)
        lag1 = max(self._lag1 if self._lag1 > 2 / math.sqrt(self.reference_size) else 0.0, own_lag1(window))
        if lag1 > 0:
            shrink = (1 - lag1) / (1 + lag1)
            kept = len(self._reference_array)
            m, n = max(1.0, min(kept, self.reference_size * shrink)), max(1.0, len(window) * shrink)
            self.p_value = max(self.p_value, float(stats.kstwobign.sf(self.statistic * math.sqrt(m * n / (m + n)))))
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
            "warmup": self.warmup,
            "keep": self.keep,
            "seen": self.seen,
            "learned": self.learned,
            "lag1": self._lag1,
            "reference": list(self.reference),
            "window": list(self.window),
            "since_test": self.since_test,
            "statistic": self.statistic,
            "p_value": self.p_value,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> KSWindow:
        obj = cls(d["reference_size"], d["window_size"], d["every"], d["alpha"], d["warmup"], d.get("keep", KEEP))
        obj.seen, obj.since_test = d["seen"], d["since_test"]
        obj.reference = list(d["reference"])
        # states saved before the reference was summarised kept it whole: complete when it was full
        obj.learned = bool(d.get("learned", len(obj.reference) >= obj.reference_size))
        obj._lag1 = d.get("lag1")
        obj.window.extend(d["window"])
        obj.statistic, obj.p_value = d["statistic"], d["p_value"]
        return obj


def lag1_autocorrelation(values: np.ndarray) -> float:
    """Lag-1 autocorrelation of ``values``, clipped to 0-0.9 (0 for fewer than 3 values or no spread): at
    the cap a sample still counts for 1/19 of its size, so that a wholesale change can still be told.

    >>> lag1_autocorrelation(np.sin(np.linspace(0, 6, 200)))  # a slow swing: each value near the last
    0.9
    >>> lag1_autocorrelation(np.random.default_rng(0).normal(size=200)) < 0.1  # independent noise
    True
    """
    if len(values) < 3:
        return 0.0
    x = values - values.mean()
    denominator = float(x @ x)
    if denominator <= 1e-12 * len(x):
        return 0.0
    return min(0.9, max(0.0, float(x[1:] @ x[:-1]) / denominator))


def own_lag1(window: np.ndarray) -> float:
    """The window's own lag-1 autocorrelation (:func:`lag1_autocorrelation`), 0 when within chance of it
    (below ``2 / sqrt(n)`` for ``n`` values).

    The whole window, not its steadier half: a colourful passer-by who stays close to an in-vehicle camera
    for a minute fills a 100-frame window as a colour cast would, and only the way the values move while
    the person does (persistent, not drawn afresh each frame) tells the two apart. The price is that a real
    step inside the window raises its ``r`` too, and delays the test until the step has filled more of it
    (10 and 40 frames in the examples of :class:`KSWindow` and :class:`MultiKS`).

    >>> rng = np.random.default_rng(1)
    >>> own_lag1(rng.normal(0, 1, 100))  # independent values
    0.0
    >>> visits = np.repeat(rng.choice([0.0, 5.0], 10), 10) + rng.normal(0, 1, 100)  # 10-frame spells
    >>> own_lag1(visits) > 0.5
    True
    """
    r = lag1_autocorrelation(window)
    return r if r > 2 / math.sqrt(len(window)) else 0.0


def holm(p_values: Mapping[str, float], alpha: float) -> set[str]:
    """Names whose hypothesis Holm's step-down procedure rejects at family-wise error rate ``alpha``.

    >>> sorted(holm({"a": 0.001, "b": 0.02, "c": 0.04}, alpha=0.05))  # 0.001 <= .05/3, .02 <= .05/2, .04 <= .05
    ['a', 'b', 'c']
    >>> sorted(holm({"a": 0.001, "b": 0.03, "c": 0.04}, alpha=0.05))  # .03 > .05/2: stop there
    ['a']
    """
    rejected: set[str] = set()
    m = len(p_values)
    for i, (name, p) in enumerate(sorted(p_values.items(), key=lambda kv: kv[1])):
        if p > alpha / (m - i):
            break
        rejected.add(name)
    return rejected


def holm_levels(p_values: Mapping[str, float], alpha: float) -> dict[str, float]:
    """The level Holm's procedure holds each p-value to: ``alpha / m`` for the smallest, then
    ``alpha / (m - 1)``, and so on (a p-value is rejected only if those before it were too).

    >>> holm_levels({"a": 0.001, "b": 0.03, "c": 0.04}, alpha=0.06)
    {'a': 0.02, 'b': 0.03, 'c': 0.06}
    """
    m = len(p_values)
    ranked = sorted(p_values.items(), key=lambda kv: kv[1])
    return {name: alpha / (m - i) for i, (name, _) in enumerate(ranked)}


# signal -> the signal whose move, when it explains this one's, is the one reported (see MultiKS): the light
# moves brightness and contrast by the same factor, a lower contrast moves saturation with it
EXPLAINED_BY = {"contrast": ("brightness", light_explains), "saturation": ("contrast", contrast_explains)}
# signal -> the smallest factor between matching quantiles of window and reference worth an alert (see MultiKS)
MIN_FACTOR = {"brightness": 1.1, "contrast": 1.1, "blur": 1.25, "saturation": 1.1}
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
BULK = slice(1, 4)  # the quartiles of QUANTILES: the bulk of a distribution, whose move MIN_FACTOR judges


def log_shifts(w: KSWindow) -> np.ndarray:
    """``log((window quantile + 1) / (reference quantile + 1))`` at each of :data:`QUANTILES`: how far, and by
    what factor, the window's distribution moved (+1: a signal at 0, a black frame's, has no factor)."""
    ref = np.quantile(np.asarray(w.reference), QUANTILES)
    win = np.quantile(np.fromiter(w.window, float, len(w.window)), QUANTILES)
    return np.log((np.maximum(win, 0) + 1) / (np.maximum(ref, 0) + 1))


def _largest_factor(shifts: np.ndarray) -> float:
    """The factor of the quantile that moved most (:func:`log_shifts`)."""
    return math.exp(float(shifts[np.argmax(np.abs(shifts))]))


class MultiKS:
    """KS tests of several scalar signals at once, with Holm's correction for multiple testing.

    Each signal has its own :class:`KSWindow`; all are tested on the same values (every ``every``-th
    update), then Holm's step-down procedure decides which drifted, so that the chance of *any* false
    alarm per test round stays at ``alpha`` however many signals are watched.

    Why Holm and not Benjamini-Hochberg: an alert pages someone, so the quantity to bound is the chance
    of any false alarm (family-wise error), which BH does not bound (it bounds the share of false ones
    among those raised, fit for screening thousands of hypotheses, not for a handful of alarms). Holm is
    valid whatever the dependence between signals (brightness, contrast and exposure move together),
    where BH needs positive dependence, and it is never less powerful than plain Bonferroni.

    ``update`` takes a mapping of signal name to value; a missing or ``None`` value (``frame_diff`` of a
    first frame) skips that signal for this update.

    A drift must also matter: with little noise (a fixed camera) the test finds moves far too small to
    act on, a few percent of light. So a signal in :data:`MIN_FACTOR` is reported only when one of the
    window's quartiles (:data:`BULK` of :data:`QUANTILES`) moved by at least that factor from the
    reference's (:func:`log_shifts`): 10 % for brightness, contrast and saturation, 25 % for blur. The
    quartiles and not the tails: a tail moves with a few frames (a bright van passing, a person close to
    the lens), the bulk only when the camera's normal view has changed.

    The signal named is the one that moved: a signal of :data:`EXPLAINED_BY` whose factor (the median of
    its quantiles' log factors) its cause's factor explains (:func:`streams.monitor.signals.light_explains`,
    :func:`streams.monitor.signals.contrast_explains`) is
    not reported; a lower contrast moves saturation with it (contrast is the alert). The light moves
    brightness and contrast by the same factor, leaving contrast relative to brightness as it is: when
    both are watched, that ratio has a window of its own, and a contrast drift whose ratio did not drift
    is not reported (dusk: brightness is the alert, not contrast). A lower
    contrast at the same brightness still is reported, and a paler colour at the same contrast.

    State: one :class:`KSWindow` per signal (about 5 KB of JSON each for 200 + 100 values).

    >>> import random
    >>> rng = random.Random(5)
    >>> d = MultiKS(["brightness", "contrast", "blur"], reference=200, window=100, every=10, alpha=0.001)
    >>> for i in range(600):
    ...     shift = 25.0 if i >= 400 else 0.0  # brightness rises at 400
    ...     x = {"brightness": rng.gauss(100 + shift, 8), "contrast": rng.gauss(50, 5), "blur": rng.gauss(300, 30)}
    ...     if d.update(x).drift_detected:
    ...         print(i, sorted(d.drifted), f"p={d.p_values['brightness']:.1e}")
    ...         break
    469 ['brightness'] p=3.1e-04
    """

    def __init__(
        self,
        signals: Iterable[str],
        reference: int = 200,
        window: int = 100,
        every: int = 10,
        alpha: float = 0.001,
        warmup: int = 0,
    ):
        self.alpha = alpha
        self.every = every
        # Each window runs its own test only when told: alpha=0.5 there is unused, the decision is Holm's.
        self.windows = {s: KSWindow(reference, window, every=1, alpha=0.5, warmup=warmup) for s in signals}
        # contrast relative to brightness (streams.monitor.range.relative_contrast), when both are watched
        self.relative = (
            KSWindow(reference, window, every=1, alpha=0.5, warmup=warmup)
            if {"contrast", "brightness"} <= set(self.windows)
            else None
        )
        self._reset()

    def _reset(self) -> None:
        self.since_test = 0
        self.drifted: set[str] = set()  # signals whose drift Holm's procedure confirmed at the last test

    def update(self, values: Mapping[str, float | None]) -> MultiKS:
        for name, w in self.windows.items():
            v = values.get(name)
            if v is not None:
                w.seen += 1
                if w.seen <= w.warmup:
                    continue
                if not w.ready:
                    w.add_reference(v)
                else:
                    w.window.append(float(v))
        c, b = values.get("contrast"), values.get("brightness")
        r = self.relative
        if r is not None and c is not None and b is not None:
            r.seen += 1
            if r.seen > r.warmup:
                x = 100 * float(c) / max(float(b), 1.0)
                if r.ready:
                    r.window.append(x)
                else:
                    r.add_reference(x)
        self.since_test += 1
        if self.since_test >= self.every:
            self.test()
        return self

    def test(self) -> set[str]:
        """Test every signal whose window is full, now; return the drifted ones."""
        self.since_test = 0
        full = {n: w for n, w in self.windows.items() if w.ready and len(w.window) == w.window_size}
        for w in full.values():
            w.test()
        self.drifted = holm({n: w.p_value for n, w in full.items()}, self.alpha)
        shifts = {n: log_shifts(full[n]) for n in self.drifted}
        for name in list(self.drifted):
            if float(np.abs(shifts[name][BULK]).max()) < math.log(MIN_FACTOR.get(name, 1.0)):
                self.drifted.discard(name)  # significant, but too small to matter
        for name, (cause, explains) in EXPLAINED_BY.items():
            if (
                name in self.drifted
                and cause in full
                and explains(_largest_factor(shifts[name]), _largest_factor(log_shifts(full[cause])))
            ):
                self.drifted.discard(name)
        r = self.relative
        if "contrast" in self.drifted and r is not None and r.ready and len(r.window) == r.window_size:
            r.test()
            if r.p_value >= self.alpha or float(np.abs(log_shifts(r)[BULK]).max()) < math.log(MIN_FACTOR["contrast"]):
                self.drifted.discard("contrast")  # contrast relative to brightness stayed: the light's doing
        return self.drifted

    @property
    def drift_detected(self) -> bool:
        return bool(self.drifted)

    @property
    def statistics(self) -> dict[str, float]:
        """Each signal's last KS statistic D (0-1)."""
        return {n: w.statistic for n, w in self.windows.items()}

    @property
    def p_values(self) -> dict[str, float]:
        """Each signal's last raw (uncorrected) p-value."""
        return {n: w.p_value for n, w in self.windows.items()}

    def to_dict(self) -> dict:
        return {
            "alpha": self.alpha,
            "every": self.every,
            "since_test": self.since_test,
            "drifted": sorted(self.drifted),
            "windows": {n: w.to_dict() for n, w in self.windows.items()},
            "relative": self.relative.to_dict() if self.relative is not None else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> MultiKS:
        obj = cls([], alpha=d["alpha"], every=d["every"])
        obj.windows = {n: KSWindow.from_dict(w) for n, w in d["windows"].items()}
        # a state saved before the relative contrast was kept: contrast is not explained until it is learned again
        obj.relative = KSWindow.from_dict(d["relative"]) if d.get("relative") else None
        obj.since_test, obj.drifted = d["since_test"], set(d["drifted"])
        return obj


# The image signals whose distributions are tested (data_drift, "<name>_distribution").
DISTRIBUTION_SIGNALS = ("brightness", "contrast", "blur", "saturation")


class DistributionDetector(Detector):
    """:class:`MultiKS` on :data:`DISTRIBUTION_SIGNALS` as a detector of the camera's monitor: ``data_drift``,
    signals ``<name>_distribution``; slower, subtler changes than the range rule's."""

    name = "distributions"

    def __init__(self, inner: MultiKS):
        self.inner = inner

    @classmethod
    def new(cls, settings: Any, camera_id: str) -> DistributionDetector | None:
        s = settings
        if not s.ks_reference:
            return None
        return cls(
            MultiKS(DISTRIBUTION_SIGNALS, reference=s.ks_reference, window=s.ks_window, every=s.ks_every,
                    alpha=s.ks_alpha)
        )  # fmt: skip

    def observe(self, obs: Observation) -> list[Change]:
        if not isinstance(obs, Frame):
            return []
        d, m = self.inner, obs.metrics
        before = set(d.drifted)
        # Rounded: the windows travel through the changelog as JSON, and 3 decimals are plenty for a test.
        d.update({name: round(float(getattr(m, name)), 3) for name in DISTRIBUTION_SIGNALS})
        changes = set_changes(before, set(d.drifted))
        return [Change("data_drift", f"{k}_distribution", status, *self._value(k)) for k, status in changes]

    def _value(self, name: str) -> tuple[float, float, str]:
        w = self.inner.windows[name]
        text = (
            f"{name} distribution of the last {w.window_size} frames differs from "
            f"the reference's {w.reference_size} (KS D={w.statistic:.2f}, p={w.p_value:.1e})"
        )
        return w.p_value, self.inner.alpha, text

    def statistics(self) -> list:
        """``ks_holm``, ``<signal>_distribution``: the KS p-value of the window against the reference, and the
        level Holm's correction holds it to; drift below it."""
        d = self.inner
        full = {n: w for n, w in d.windows.items() if w.ready and len(w.window) == w.window_size}
        levels = holm_levels({n: w.p_value for n, w in full.items()}, d.alpha)
        return [
            s
            for n, w in full.items()
            for s in statistic("ks_holm", f"{n}_distribution", w.p_value, levels[n], n in d.drifted, w.window_size)
        ]

    def configure(self, settings: Any) -> None:
        self.inner.alpha = settings.ks_alpha

    def essential(self) -> object:
        return sorted(self.inner.drifted)

    def to_dict(self) -> dict:
        return self.inner.to_dict()

    @classmethod
    def from_dict(cls, d: dict) -> DistributionDetector:
        return cls(MultiKS.from_dict(d))
