"""Outlier scores on embedding vectors, calibrated to a target false-alarm rate.

Both detectors fit on a reference window of one camera's embeddings (e.g. the 1280-d EfficientNet-Lite0
features of its first few hundred frames), hold out part of it, and set the threshold from the held-out
scores: the ``ceil((n + 1) (1 - rate)) / n`` quantile, as in split conformal prediction, so that for
vectors like the reference the chance of a false alarm is at most ``rate`` (given independent frames;
consecutive frames are alike, so calibrate on a reference spread over time, e.g. one frame in ten).
After fitting they do not learn: a camera whose scene has changed for good needs a new reference. So the
state (``to_dict``) changes only when fitted: the last score is not part of it, and a steady camera writes
nothing to the changelog.
"""

from __future__ import annotations

import base64
import binascii
import math
import warnings
from collections.abc import Mapping

import numpy as np

from streams.monitor.state import StateError, flag, integer, mapping, number, version

STATE_VERSION = 1


def _conformal_threshold(scores: np.ndarray, rate: float) -> float:
    n = len(scores)
    k = math.ceil((n + 1) * (1 - rate))
    if k > n:  # too few held-out scores for this rate: flag only what beats the worst of them
        return float(np.max(scores))
    return float(np.sort(scores)[k - 1])


def _split(x: np.ndarray, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if x.ndim != 2 or len(x) < 10:
        raise ValueError("fit needs a 2-d array of at least 10 reference vectors")
    order = np.random.default_rng(seed).permutation(len(x))
    n_cal = max(1, round(len(x) * holdout))
    return x[order[n_cal:]], x[order[:n_cal]]


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, np.float32).tobytes()).decode()


def _unb64(s: object, shape: tuple[int, ...]) -> np.ndarray:
    """A float32 array of ``shape`` from its base64 bytes, as float64; :class:`StateError` if it is not one."""
    if not isinstance(s, str) or len(s) != 4 * math.ceil(4 * math.prod(shape) / 3):
        raise StateError(f"an array of shape {shape} expected as base64 float32")
    try:
        a = np.frombuffer(base64.b64decode(s, validate=True), np.float32).reshape(shape).astype(np.float64)
    except (binascii.Error, ValueError) as exc:
        raise StateError(f"an array of shape {shape}: {exc}") from None
    if not np.isfinite(a).all():
        raise StateError(f"an array of shape {shape} holds values that are not finite")
    return a


class AutoencoderOutlier:
    """Outlier score of an embedding: its reconstruction error through a small autoencoder.

    The autoencoder is scikit-learn's ``MLPRegressor`` trained to map standardised vectors onto
    themselves through a ``bottleneck``-wide tanh layer (with optional ``hidden`` layers around it).
    scikit-learn gives a tested Adam optimiser and early stopping in a few lines and no deep-learning
    framework; it is needed only to fit: scoring is a numpy forward pass over the stored weights (tens of
    µs), and :meth:`from_dict` does not import it. The score is the mean squared error per dimension, in
    units of the reference's per-dimension standard deviation.

    Parameters: bottleneck (units), hidden (units per layer, encoder side), false_alarm_rate (0-1),
    holdout (share of the reference kept for calibration), max_iter (epochs), seed.

    State: mean, scale and weights as float32: ``4 (2d + 2 d b + b + d)`` bytes, about 240 KB as JSON for
    d = 1280, b = 16 (12 KB for d = 64).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> basis = rng.normal(size=(4, 64))
    >>> reference = rng.normal(size=(600, 4)) @ basis + 0.1 * rng.normal(size=(600, 64))
    >>> d = AutoencoderOutlier(bottleneck=8, false_alarm_rate=0.05).fit(reference)
    >>> d.update(rng.normal(size=4) @ basis + 0.1 * rng.normal(size=64)).is_outlier
    False
    >>> d.update(3 * rng.normal(size=64)).is_outlier
    True
    """

    def __init__(
        self,
        bottleneck: int = 16,
        hidden: tuple[int, ...] = (),
        false_alarm_rate: float = 0.01,
        holdout: float = 0.3,
        max_iter: int = 300,
        seed: int = 0,
    ):
        if not 0 < false_alarm_rate < 1 or not 0 < holdout < 1:
            raise ValueError("false_alarm_rate and holdout must be between 0 and 1")
        self.bottleneck = bottleneck
        self.hidden = tuple(hidden)
        self.false_alarm_rate = false_alarm_rate
        self.holdout = holdout
        self.max_iter = max_iter
        self.seed = seed
        self._reset()

    def _reset(self) -> None:
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None
        self.weights: list[np.ndarray] = []
        self.biases: list[np.ndarray] = []
        self.threshold = math.inf
        self.last_score = 0.0

    @property
    def fitted(self) -> bool:
        return self.mean is not None

    def fit(self, reference: np.ndarray) -> AutoencoderOutlier:
        """Train on part of ``reference`` (n vectors x d), calibrate the threshold on the rest."""
        train, cal = _split(np.asarray(reference, np.float64), self.holdout, self.seed)
        from sklearn.exceptions import ConvergenceWarning  # only fitting needs scikit-learn
        from sklearn.neural_network import MLPRegressor

        std = train.std(axis=0)
        scale = np.maximum(std, 1e-3 * float(std.mean()) + 1e-12)  # flat dimensions must not divide by 0
        # Everything kept is rounded to float32 now, as to_dict stores it, so a restored detector scores the same.
        self.mean, self.scale = (a.astype(np.float32).astype(np.float64) for a in (train.mean(axis=0), scale))
        z = (train - self.mean) / self.scale
        layers = (*self.hidden, self.bottleneck, *reversed(self.hidden))
        ae = MLPRegressor(layers, activation="tanh", max_iter=self.max_iter, random_state=self.seed, tol=1e-5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            ae.fit(z, z)
        self.weights = [w.astype(np.float32).astype(np.float64) for w in ae.coefs_]
        self.biases = [b.astype(np.float32).astype(np.float64) for b in ae.intercepts_]
        self.threshold = _conformal_threshold(self.score_many(cal), self.false_alarm_rate)
        return self

    def score_many(self, vectors: np.ndarray) -> np.ndarray:
        """Scores of n vectors (n x d): mean squared reconstruction error, standardised units."""
        if not self.fitted:
            raise RuntimeError("fit the detector on a reference window first")
        z = (np.atleast_2d(np.asarray(vectors, np.float64)) - self.mean) / self.scale
        a = z
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            a = a @ w + b
            if i < last:
                a = np.tanh(a)
        return ((a - z) ** 2).mean(axis=1)

    def score(self, vector: np.ndarray) -> float:
        return float(self.score_many(vector)[0])

    def update(self, vector: np.ndarray) -> AutoencoderOutlier:
        self.last_score = self.score(vector)
        return self

    @property
    def is_outlier(self) -> bool:
        """The last vector's score is above the calibrated threshold."""
        return self.last_score > self.threshold

    def to_dict(self) -> dict:
        params = {
            "bottleneck": self.bottleneck,
            "hidden": list(self.hidden),
            "false_alarm_rate": self.false_alarm_rate,
            "holdout": self.holdout,
            "max_iter": self.max_iter,
            "seed": self.seed,
        }
        if not self.fitted:
            return {"kind": "autoencoder", "version": STATE_VERSION, "params": params, "fitted": False}
        return {
            "kind": "autoencoder",
            "version": STATE_VERSION,
            "params": params,
            "fitted": True,
            "threshold": self.threshold,
            "dim": len(self.mean),
            "mean": _b64(self.mean),
            "scale": _b64(self.scale),
            "weights": [[list(w.shape), _b64(w)] for w in self.weights],
            "biases": [_b64(b) for b in self.biases],
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> AutoencoderOutlier:
        """The detector ``d`` describes; :class:`StateError` unless every array has the shape its layers need."""
        d = version(d, "autoencoder", STATE_VERSION)
        p = mapping(d["params"], "params")
        hidden = p["hidden"]
        if not isinstance(hidden, list) or len(hidden) > 8:
            raise StateError("hidden: a list of at most 8 layer widths expected")
        obj = cls(
            integer(p["bottleneck"], "bottleneck", lo=1, hi=100_000),
            tuple(integer(h, "hidden", lo=1, hi=100_000) for h in hidden),
            number(p["false_alarm_rate"], "false_alarm_rate", lo=1e-9, hi=1 - 1e-9),
            number(p["holdout"], "holdout", lo=1e-9, hi=1 - 1e-9),
            integer(p["max_iter"], "max_iter", lo=1, hi=1_000_000),
            integer(p["seed"], "seed", hi=2**32 - 1),
        )
        if flag(d["fitted"], "fitted"):
            dim = integer(d["dim"], "dim", lo=1, hi=100_000)
            obj.mean, obj.scale = _unb64(d["mean"], (dim,)), _unb64(d["scale"], (dim,))
            if not (obj.scale > 0).all():
                raise StateError("scale: every dimension's scale must be positive")
            widths = [dim, *obj.hidden, obj.bottleneck, *reversed(obj.hidden), dim]
            weights, biases = d["weights"], d["biases"]
            if (
                not isinstance(weights, list)
                or not isinstance(biases, list)
                or not len(weights) == len(biases) == len(widths) - 1
            ):
                raise StateError(f"{len(widths) - 1} layers of weights and biases expected")
            for i, (shape_and_data, b) in enumerate(zip(weights, biases, strict=True)):
                if not isinstance(shape_and_data, list) or len(shape_and_data) != 2:
                    raise StateError(f"layer {i}: [shape, data] expected")
                shape, data = shape_and_data
                if shape != [widths[i], widths[i + 1]]:
                    raise StateError(f"layer {i}: shape {shape}, the layers need {[widths[i], widths[i + 1]]}")
                obj.weights.append(_unb64(data, (widths[i], widths[i + 1])))
                obj.biases.append(_unb64(b, (widths[i + 1],)))
            obj.threshold = number(d["threshold"], "threshold", lo=0)
        return obj
