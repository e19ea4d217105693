"""Change-point detectors on one scalar signal: River's ADWIN, Page-Hinkley and KSWIN behind one interface.

Each wrapper is built like every detector here: ``update(x)`` returns ``self``, :attr:`drift_detected` is the
verdict, ``to_dict()`` / ``from_dict()`` carry the state. River's detectors have no dict form, so the state is
the pickled River object, base64-encoded, beside the parameters. Pickle runs code when loaded: read such
state only from the service's own changelog topic, never from anything a camera or a user can write.
River's pickle also ties the state to its version (pinned: ``river==0.23.0``): after an upgrade, a state
that fails to load means a fresh detector, which is what :meth:`from_dict` falls back to.

Per update (river 0.23, this kind of machine): ADWIN about 1.5 µs, Page-Hinkley 0.5 µs, KSWIN about 300 µs.
"""

from __future__ import annotations

import base64
import pickle
from collections.abc import Mapping
from typing import ClassVar

from river import drift


class _RiverDetector:
    kind: ClassVar[str]

    def __init__(self, **params):
        self.params = params
        self._reset()

    def _make(self):
        raise NotImplementedError

    def _reset(self) -> None:
        self.detector = self._make()
        self.n = 0  # values seen
        self.detections = 0  # changes found so far

    def update(self, x: float) -> _RiverDetector:
        self.detector.update(float(x))
        self.n += 1
        self.detections += int(self.detector.drift_detected)
        return self

    @property
    def drift_detected(self) -> bool:
        """A change was found at the last value. River's detectors reset themselves after one, so this
        is true for one update per change: an alert is raised on it, and resolved by the operator."""
        return bool(self.detector.drift_detected)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "params": dict(self.params),
            "n": self.n,
            "detections": self.detections,
            "state": base64.b64encode(pickle.dumps(self.detector, protocol=pickle.HIGHEST_PROTOCOL)).decode(),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> _RiverDetector:
        if d["kind"] != cls.kind:
            raise ValueError(f"state of a {d['kind']} detector, not {cls.kind}")
        obj = cls(**d["params"])
        try:
            detector = pickle.loads(base64.b64decode(d["state"]))  # our own changelog only, see above
        except Exception:  # another River version: start over rather than stop the stream
            return obj
        obj.detector, obj.n, obj.detections = detector, d["n"], d["detections"]
        return obj


class Adwin(_RiverDetector):
    """ADWIN (adaptive windowing): finds a change in the mean by comparing every split of a window that
    grows while the stream is steady and drops its old part when the two parts' means differ.

    ``clock=1`` checks at every value: River's default (32) finds a step about 23 values late instead
    of about 5, for about 1.5 µs per update instead of less. ``delta`` is the confidence (smaller: fewer
    false alarms, later detection). State: O(log n) buckets, about 2.6 KB as JSON after 1000 values.

    >>> import random
    >>> rng = random.Random(1)
    >>> d = Adwin()
    >>> stream = [rng.gauss(100, 2) for _ in range(300)] + [rng.gauss(80, 2) for _ in range(100)]
    >>> print([i for i, x in enumerate(stream) if d.update(x).drift_detected])
    [302]
    """

    kind = "adwin"

    def __init__(self, delta: float = 0.002, clock: int = 1, grace_period: int = 10, min_window_length: int = 5):
        super().__init__(delta=delta, clock=clock, grace_period=grace_period, min_window_length=min_window_length)

    def _make(self):
        return drift.ADWIN(**self.params)


class PageHinkley(_RiverDetector):
    """Page-Hinkley: a cumulative sum of the deviations from the running mean (less ``delta``); a change
    is found when it exceeds ``threshold`` (signal units). ``delta`` is the drift tolerated per value
    (signal units): River's default, 0.005, suits signals of scale 1; on a signal with noise sigma, about
    sigma / 4 keeps the random walk of the noise from reaching the threshold. ``mode``: "up", "down" or
    "both". State: a handful of floats, about 0.7 KB as JSON.

    >>> import random
    >>> rng = random.Random(1)
    >>> d = PageHinkley(threshold=30.0, delta=0.5)  # noise sigma 2
    >>> stream = [rng.gauss(100, 2) for _ in range(300)] + [rng.gauss(90, 2) for _ in range(100)]
    >>> print([i for i, x in enumerate(stream) if d.update(x).drift_detected])
    [303]
    """

    kind = "page_hinkley"

    def __init__(
        self,
        min_instances: int = 30,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
        mode: str = "both",
    ):
        super().__init__(min_instances=min_instances, delta=delta, threshold=threshold, alpha=alpha, mode=mode)

    def _make(self):
        return drift.PageHinkley(**self.params)


class Kswin(_RiverDetector):
    """KSWIN: a Kolmogorov-Smirnov test, at every value, of the last ``stat_size`` values of a window of
    ``window_size`` against a random sample of its older part. The sample is random: ``seed`` makes it
    repeatable (and is required here). About 300 µs per update; prefer
    :class:`streams.monitor.windows.KSWindow`, which tests every k values, when the cost matters.
    State: the window and the random generator, about 7 KB as JSON for a window of 100.

    >>> import random
    >>> rng = random.Random(1)
    >>> d = Kswin(alpha=0.0001, seed=42)
    >>> stream = [rng.gauss(100, 2) for _ in range(300)] + [rng.gauss(94, 2) for _ in range(100)]
    >>> print([i for i, x in enumerate(stream) if d.update(x).drift_detected])
    [313]
    """

    kind = "kswin"

    def __init__(self, alpha: float = 0.005, window_size: int = 100, stat_size: int = 30, seed: int = 42):
        super().__init__(alpha=alpha, window_size=window_size, stat_size=stat_size, seed=seed)

    def _make(self):
        return drift.KSWIN(**self.params)
