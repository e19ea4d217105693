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
import math
import pickle
import warnings
from collections.abc import Mapping

import numpy as np


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


def _unb64(s: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), np.float32).reshape(shape).astype(np.float64)


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
            return {"params": params, "fitted": False}
        return {
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
        p = d["params"]
        obj = cls(p["bottleneck"], tuple(p["hidden"]), p["false_alarm_rate"], p["holdout"], p["max_iter"], p["seed"])
        if d["fitted"]:
            dim = d["dim"]
            obj.mean, obj.scale = _unb64(d["mean"], (dim,)), _unb64(d["scale"], (dim,))
            obj.weights = [_unb64(s, tuple(shape)) for shape, s in d["weights"]]
            obj.biases = [_unb64(s, (w.shape[1],)) for s, w in zip(d["biases"], obj.weights, strict=True)]
            obj.threshold = d["threshold"]
        return obj


class HalfSpaceTreesOutlier:
    """Outlier score of an embedding from River's Half-Space Trees, with the same interface as
    :class:`AutoencoderOutlier`, for comparison.

    Random trees split the reference's bounding box (per-dimension min and max of the training part) in
    halves; a vector that lands in leaves the reference rarely reached scores high (0-1). Each tree looks
    at no more than ``2 ** height - 1`` random dimensions, so with high-dimensional embeddings it sees a
    sample of them: it catches vectors that are off in many dimensions, and may miss one that is off in
    a few. About 100 µs per vector for d = 64, 300 µs for d = 1280 (the vector becomes a dict).

    State: the pickled River model, base64 (see :mod:`streams.monitor.changepoint` on pickle), plus the
    threshold; about 330 KB as JSON for 10 trees of height 8 at d = 1280, 200 KB at d = 64.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> reference = rng.normal(size=(600, 32))
    >>> d = HalfSpaceTreesOutlier(false_alarm_rate=0.05).fit(reference)
    >>> d.update(rng.normal(size=32)).is_outlier
    False
    >>> d.update(rng.normal(size=32) + 4).is_outlier
    True
    """

    def __init__(
        self,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        false_alarm_rate: float = 0.01,
        holdout: float = 0.3,
        seed: int = 0,
    ):
        if not 0 < false_alarm_rate < 1 or not 0 < holdout < 1:
            raise ValueError("false_alarm_rate and holdout must be between 0 and 1")
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.false_alarm_rate = false_alarm_rate
        self.holdout = holdout
        self.seed = seed
        self.model = None
        self.threshold = math.inf
        self.last_score = 0.0

    @property
    def fitted(self) -> bool:
        return self.model is not None

    def fit(self, reference: np.ndarray) -> HalfSpaceTreesOutlier:
        from river import anomaly

        x = np.asarray(reference, np.float64)
        train, cal = _split(x, self.holdout, self.seed)
        lo, hi = train.min(axis=0), train.max(axis=0)
        hi = np.where(hi > lo, hi, lo + 1e-9)  # a flat dimension still needs a box to split
        limits = {i: (float(a), float(b)) for i, (a, b) in enumerate(zip(lo, hi, strict=True))}
        # The trees score against the mass of the last complete window: learn exactly one window's worth.
        window = min(self.window_size, len(train))
        self.model = anomaly.HalfSpaceTrees(
            n_trees=self.n_trees, height=self.height, window_size=window, limits=limits, seed=self.seed
        )
        for v in train[-window:]:
            self.model.learn_one(dict(enumerate(v.tolist())))
        self.threshold = _conformal_threshold(self.score_many(cal), self.false_alarm_rate)
        return self

    def score(self, vector: np.ndarray) -> float:
        if not self.fitted:
            raise RuntimeError("fit the detector on a reference window first")
        return float(self.model.score_one(dict(enumerate(np.asarray(vector, np.float64).ravel().tolist()))))

    def score_many(self, vectors: np.ndarray) -> np.ndarray:
        return np.array([self.score(v) for v in np.atleast_2d(vectors)])

    def update(self, vector: np.ndarray) -> HalfSpaceTreesOutlier:
        self.last_score = self.score(vector)
        return self

    @property
    def is_outlier(self) -> bool:
        return self.last_score > self.threshold

    def to_dict(self) -> dict:
        return {
            "params": {
                "n_trees": self.n_trees,
                "height": self.height,
                "window_size": self.window_size,
                "false_alarm_rate": self.false_alarm_rate,
                "holdout": self.holdout,
                "seed": self.seed,
            },
            "threshold": None if math.isinf(self.threshold) else self.threshold,
            "model": None if self.model is None else base64.b64encode(pickle.dumps(self.model)).decode(),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> HalfSpaceTreesOutlier:
        obj = cls(**d["params"])
        obj.threshold = math.inf if d["threshold"] is None else d["threshold"]
        if d["model"] is not None:
            obj.model = pickle.loads(base64.b64decode(d["model"]))  # our own changelog only
        return obj
