"""Alert rules, pure: a camera's own recent range, and the per-camera bookkeeping around it.

:class:`OutOfRange` follows River's shape: ``update(x)`` then ``drift_detected``. Its whole state is a
small dict (:meth:`OutOfRange.to_dict`) so that the worker can keep it in a changelog-backed table and
get it back after a restart or a rebalance.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import asdict, dataclass, field

from streams.contracts import Alert, FrameMetrics


@dataclass
class OutOfRange:
    """Flags a stream that leaves its own recent range.

    After ``warmup`` values it keeps an exponentially weighted mean and variance of the values seen in
    range; a value further than ``sigmas`` standard deviations from the mean is out of range, and
    ``consecutive`` such values in a row set :attr:`drift_detected`. Out-of-range values do not move the
    baseline, so a lasting change stays flagged until the stream comes back. ``min_std`` and
    ``rel_std`` put a floor under the deviation so that a very steady stream does not alarm on noise.

    Parameters: warmup (values), sigmas, consecutive (values), alpha (EWMA weight, 0-1),
    min_std (signal units), rel_std (fraction of the mean).

    >>> import random
    >>> rng = random.Random(7)
    >>> d = OutOfRange(warmup=20, sigmas=4, consecutive=3, min_std=1.0)
    >>> stream = [100 + rng.gauss(0, 2) for _ in range(60)] + [40 + rng.gauss(0, 2) for _ in range(10)]
    >>> for i, x in enumerate(stream):
    ...     if d.update(x).drift_detected:
    ...         print(f"change detected at {i}")
    ...         break
    change detected at 62
    """

    warmup: int = 30
    sigmas: float = 5.0
    consecutive: int = 3
    alpha: float = 0.02
    min_std: float = 1.0
    rel_std: float = 0.05
    n: int = 0
    mean: float = 0.0
    var: float = 0.0
    run: int = 0  # out-of-range values in a row
    last: float = 0.0

    def update(self, x: float) -> OutOfRange:
        self.last = x
        if self.n < self.warmup:  # Welford while warming up
            self.n += 1
            delta = x - self.mean
            self.mean += delta / self.n
            self.var += (delta * (x - self.mean) - self.var) / self.n
            return self
        if abs(x - self.mean) > self.threshold:
            self.run += 1
            return self
        self.run = 0
        self.n += 1
        delta = x - self.mean
        self.mean += self.alpha * delta
        self.var = (1 - self.alpha) * (self.var + self.alpha * delta * delta)
        return self

    @property
    def std(self) -> float:
        return max(math.sqrt(max(self.var, 0.0)), self.min_std, self.rel_std * abs(self.mean))

    @property
    def threshold(self) -> float:
        """Largest distance from the mean still in range, signal units."""
        return self.sigmas * self.std

    @property
    def ready(self) -> bool:
        return self.n >= self.warmup

    @property
    def drift_detected(self) -> bool:
        return self.ready and self.run >= self.consecutive

    def to_dict(self) -> dict:
        return asdict(self)


# Signals watched by the range rule, and the floor of each one's deviation (signal units, fraction of mean).
WATCHED = {"brightness": (2.0, 0.03), "blur": (5.0, 0.15)}
EVIDENCE_FRAMES = 5


@dataclass
class CameraHealth:
    """Everything the worker remembers about one camera, serialisable with :meth:`to_dict`."""

    camera_id: str
    detectors: dict[str, OutOfRange] = field(default_factory=dict)
    active: dict[str, str] = field(default_factory=dict)  # signal -> alert_id of the raised alert
    last_raised: dict[str, float] = field(default_factory=dict)  # signal -> unix s
    recent_frames: list[str] = field(default_factory=list)

    @classmethod
    def new(cls, camera_id: str, *, warmup: int, sigmas: float, consecutive: int) -> CameraHealth:
        dets = {
            name: OutOfRange(warmup=warmup, sigmas=sigmas, consecutive=consecutive, min_std=a, rel_std=r)
            for name, (a, r) in WATCHED.items()
        }
        return cls(camera_id, dets)

    @classmethod
    def from_dict(cls, d: dict) -> CameraHealth:
        return cls(
            camera_id=d["camera_id"],
            detectors={k: OutOfRange(**v) for k, v in d["detectors"].items()},
            active=dict(d["active"]),
            last_raised=dict(d["last_raised"]),
            recent_frames=list(d["recent_frames"]),
        )

    def to_dict(self) -> dict:
        return {
            "camera_id": self.camera_id,
            "detectors": {k: v.to_dict() for k, v in self.detectors.items()},
            "active": self.active,
            "last_raised": self.last_raised,
            "recent_frames": self.recent_frames,
        }

    def observe(self, m: FrameMetrics, cooldown_s: float) -> list[Alert]:
        """Feed one frame's metrics; return the alerts raised or resolved by it."""
        self.recent_frames = [*self.recent_frames[-(EVIDENCE_FRAMES - 1) :], m.frame_id]
        alerts = []
        for signal, det in self.detectors.items():
            value = float(getattr(m, signal))
            det.update(value)
            if det.drift_detected and signal not in self.active:
                if m.processed_at - self.last_raised.get(signal, -math.inf) < cooldown_s:
                    continue
                alert = self._alert(m, signal, det, "raised", str(uuid.uuid4()))
                self.active[signal] = alert.alert_id
                self.last_raised[signal] = m.processed_at
                alerts.append(alert)
            elif signal in self.active and det.run == 0:
                alerts.append(self._alert(m, signal, det, "resolved", self.active.pop(signal)))
        return alerts

    def _alert(self, m: FrameMetrics, signal: str, det: OutOfRange, status: str, alert_id: str) -> Alert:
        direction = "above" if det.last > det.mean else "below"
        if status == "raised":
            text = (
                f"{signal} of camera {m.camera_id} is {det.last:.1f}, {direction} its recent range "
                f"{det.mean:.1f} ± {det.threshold:.1f} for {det.run} frames"
            )
        else:
            text = f"{signal} of camera {m.camera_id} is back in its recent range ({det.last:.1f})"
        return Alert(
            alert_id=alert_id,
            type="data_drift",
            status=status,
            severity="warning",
            camera_id=m.camera_id,
            signal=signal,
            value=det.last,
            threshold=det.threshold,
            window=det.n,
            model_name=m.model_name,
            model_version=m.model_version,
            evidence_frame_ids=list(self.recent_frames),
            raised_at=m.processed_at,
            message=text,
        )
