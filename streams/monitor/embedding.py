"""Embedding drift and outliers of one camera: what the image *looks like*, beyond any one scalar signal.

:class:`EmbeddingDrift` takes the image embeddings the worker samples (``CVOPS_EMBEDDING_EVERY``), fits an
:class:`~streams.monitor.outlier.AutoencoderOutlier` on the camera's first ones and then gives every new one
an outlier score (its reconstruction error). Two verdicts come out of that score:

- **outlier**: ``consecutive`` sampled frames in a row above the calibrated threshold (one odd frame, a
  lorry filling the view, is an edge case; several in a row is a camera that sees something else);
- **embedding drift**: the distribution of recent scores against the distribution just after fitting,
  a :class:`~streams.monitor.windows.KSWindow`: a scene that changed gradually (fog, a new building,
  season) moves the whole distribution before any one frame is an outlier.

The embedding is first projected to ``dim`` dimensions by a fixed Gaussian random matrix (seeded, the same
for every camera, rebuilt rather than stored). Random projections keep distances within a small factor
(Johnson-Lindenstrauss) and the autoencoder small: its state is about 12 KB of JSON for 64 dimensions
against 240 KB for the raw 1280, which matters because the state travels through the changelog.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import numpy as np

from core.contracts import FrameMetrics
from streams.monitor.base import Change, Detector, Frame, Observation, statistic
from streams.monitor.outlier import AutoencoderOutlier
from streams.monitor.windows import KSWindow


@cache
def projection(source_dim: int, dim: int, seed: int = 0) -> np.ndarray:
    """The fixed ``source_dim x dim`` Gaussian projection, scaled to keep vector lengths on average."""
    return np.random.default_rng(seed).normal(0.0, 1.0 / np.sqrt(dim), size=(source_dim, dim))


class EmbeddingDrift:
    """Outlier score, outlier runs and score drift of one camera's embeddings.

    Parameters: reference (embeddings to fit on), dim (projected dimensions), bottleneck (autoencoder
    units), false_alarm_rate (per embedding, 0-1), consecutive (outliers in a row to raise the verdict,
    ordinary embeddings in a row to clear it),
    score_reference / score_window (scores in the KS reference and sliding window), every (scores between
    KS tests), alpha (KS p-value).

    State: the reference being collected (``reference x dim`` floats) until the fit, then the
    autoencoder (about 12 KB as JSON) and the KS windows of scores.

    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> basis = rng.normal(size=(6, 256))
    >>> scene = lambda n: rng.normal(size=(n, 6)) @ basis + 0.2 * rng.normal(size=(n, 256))
    >>> d = EmbeddingDrift(reference=80, dim=32, bottleneck=6, score_reference=40, score_window=20, every=5)
    >>> for v in scene(200):
    ...     _ = d.update(v)
    >>> d.fitted, d.outlier, d.drift_detected
    (True, False, False)
    >>> for v in 4 * rng.normal(size=(3, 256)):  # the camera sees something else entirely
    ...     _ = d.update(v)
    >>> d.outlier, d.score > d.threshold
    (True, True)
    """

    def __init__(
        self,
        reference: int = 50,
        dim: int = 64,
        bottleneck: int = 8,
        false_alarm_rate: float = 0.01,
        consecutive: int = 3,
        score_reference: int = 50,
        score_window: int = 25,
        every: int = 5,
        alpha: float = 0.001,
    ):
        self.reference_size = reference
        self.dim = dim
        self.consecutive = consecutive
        self.detector = AutoencoderOutlier(bottleneck=bottleneck, false_alarm_rate=false_alarm_rate)
        self.scores = KSWindow(reference=score_reference, window=score_window, every=every, alpha=alpha)
        self.collected: list[list[float]] = []  # projected reference vectors until the fit
        self.source_dim = 0
        self.score = 0.0
        self.run = 0  # outliers in a row
        self.calm = 0  # ordinary embeddings in a row
        self.outlier = False

    @property
    def fitted(self) -> bool:
        return self.detector.fitted

    @property
    def threshold(self) -> float:
        return self.detector.threshold

    @property
    def drift_detected(self) -> bool:
        return self.scores.drift_detected

    def _project(self, vector: Sequence[float]) -> np.ndarray:
        v = np.asarray(vector, np.float64).ravel()
        if not self.source_dim:
            self.source_dim = v.size
        if v.size != self.source_dim:
            raise ValueError(f"embedding has {v.size} dimensions, this camera's had {self.source_dim}")
        return v @ projection(v.size, self.dim) if v.size > self.dim else v

    def update(self, vector: Sequence[float]) -> EmbeddingDrift:
        """Feed one embedding."""
        z = self._project(vector)
        if not self.fitted:
            self.collected.append([round(float(x), 5) for x in z])
            if len(self.collected) >= self.reference_size:
                self.detector.fit(np.asarray(self.collected))
                self.collected = []
            return self
        self.detector.update(z)
        self.score = self.detector.last_score
        odd = self.detector.is_outlier
        self.run, self.calm = (self.run + 1, 0) if odd else (0, self.calm + 1)
        # Raised after `consecutive` outliers in a row, cleared after as many ordinary frames in a row.
        if self.run >= self.consecutive:
            self.outlier = True
        elif self.calm >= self.consecutive:
            self.outlier = False
        self.scores.update(self.score)
        return self

    def to_dict(self) -> dict:
        return {
            "reference_size": self.reference_size,
            "dim": self.dim,
            "consecutive": self.consecutive,
            "detector": self.detector.to_dict(),
            "scores": self.scores.to_dict(),
            "collected": self.collected,
            "source_dim": self.source_dim,
            "score": self.score,
            "run": self.run,
            "calm": self.calm,
            "outlier": self.outlier,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> EmbeddingDrift:
        obj = cls(reference=d["reference_size"], dim=d["dim"], consecutive=d["consecutive"])
        obj.detector = AutoencoderOutlier.from_dict(d["detector"])
        obj.scores = KSWindow.from_dict(d["scores"])
        obj.collected = [list(v) for v in d["collected"]]
        obj.source_dim = int(d["source_dim"])
        obj.score, obj.run, obj.calm, obj.outlier = float(d["score"]), int(d["run"]), int(d["calm"]), bool(d["outlier"])
        return obj


class EmbeddingDetector(Detector):
    """:class:`EmbeddingDrift` as a detector of the camera's monitor: ``outlier`` (``embedding_outlier``) for
    runs of outlying frames, ``embedding_drift`` (``embedding_score``) when the score distribution moves.
    Frames without an embedding (most: they are sampled) are not looked at."""

    name = "embedding"

    def __init__(self, inner: EmbeddingDrift):
        self.inner = inner
        self.peak: float | None = None  # highest outlier score since the last sample; not persisted

    @classmethod
    def new(cls, settings: Any, camera_id: str) -> EmbeddingDetector | None:
        return cls(EmbeddingDrift(reference=settings.embedding_reference)) if settings.embedding_reference else None

    def observe(self, obs: Observation) -> list[Change]:
        if not isinstance(obs, Frame) or not obs.metrics.embedding:
            return []
        e = self.inner
        was_outlier, was_drift = e.outlier, e.drift_detected
        e.update(obs.metrics.embedding)
        out = []
        if e.outlier != was_outlier:
            text = f"{e.consecutive} sampled frames in a row look unlike the reference (score {e.score:.2f})"
            out.append(Change("outlier", "embedding_outlier", "raised" if e.outlier else "resolved", e.score,
                              e.threshold, text))  # fmt: skip
        if e.drift_detected != was_drift:
            w = e.scores
            text = f"embedding outlier scores shifted against the reference (KS D={w.statistic:.2f}, p={w.p_value:.1e})"
            status = "raised" if e.drift_detected else "resolved"
            out.append(Change("embedding_drift", "embedding_score", status, w.p_value, w.alpha, text))
        return out

    def annotate(self, metrics: FrameMetrics) -> dict:
        """The frame's ``outlier_score`` when its embedding was scored."""
        e = self.inner
        if not (metrics.embedding and e.fitted and math.isfinite(e.score)):
            return {}
        self.peak = max(e.score, self.peak or 0.0)
        return {"outlier_score": min(max(e.score, 0.0), 1e12)}  # the contract's bounds

    def sampled(self) -> None:
        self.peak = None

    def statistics(self) -> list:
        """``autoencoder``, ``embedding_outlier``: the highest outlier score since the last sample (or the last
        score), and the calibrated threshold; ``ks``, ``embedding_score``: KS p-value of recent outlier scores
        against the reference's, and alpha."""
        e = self.inner
        if not e.fitted:
            return []
        peak = self.peak if self.peak is not None else e.score
        out = statistic("autoencoder", "embedding_outlier", peak, e.threshold, e.outlier, e.consecutive)
        w = e.scores
        if w.ready and len(w.window) == w.window_size:
            out += statistic("ks", "embedding_score", w.p_value, w.alpha, e.drift_detected, w.window_size)
        return out

    def essential(self) -> object:
        return [self.inner.fitted, self.inner.outlier, self.inner.drift_detected]

    def to_dict(self) -> dict:
        return self.inner.to_dict()

    @classmethod
    def from_dict(cls, d: dict) -> EmbeddingDetector:
        return cls(EmbeddingDrift.from_dict(d))
