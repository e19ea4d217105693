"""The range rule, pure: a camera's own reference range, and the per-camera bookkeeping around it.

:class:`OutOfRange` follows River's shape: ``update(x)`` then ``drift_detected``. Its whole state is a
small dict (:meth:`OutOfRange.to_dict`) so that the worker can keep it in a changelog-backed table and
get it back after a restart or a rebalance. :class:`CameraHealth` watches a camera's signals with it, and
:class:`RangeDetector` is that as a detector of the camera's monitor (:mod:`streams.monitor.base`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from core.contracts import Alert, DriftStatistic, FrameMetrics
from streams.monitor.base import Change, Detector, Frame, Observation, Where, alert_id, make_alert


@dataclass
class OutOfRange:
    """Flags a stream that leaves the range it showed in its reference window.

    The first ``warmup`` values are the reference. Its 5th and 95th percentiles ``lo`` and ``hi``, widened
    by ``tolerance`` times their spread on each side, make the range; ``consecutive`` values outside it in
    a row set :attr:`drift_detected`, and one value back inside clears it. The spread has a floor,
    ``max(min_spread, rel_spread * |median|)``, so that a very steady stream does not alarm on noise.
    With ``log=True`` the range is kept on ``log1p(x)``, for signals that vary by factors (blur).

    Parameters: warmup (values), tolerance (spreads), consecutive (values), min_spread and rel_spread
    (signal units, or log units with ``log=True``).

    >>> import random
    >>> rng = random.Random(7)
    >>> d = OutOfRange(warmup=20, consecutive=3, min_spread=5.0)
    >>> stream = [100 + rng.gauss(0, 2) for _ in range(60)] + [40 + rng.gauss(0, 2) for _ in range(10)]
    >>> for i, x in enumerate(stream):
    ...     if d.update(x).drift_detected:
    ...         print(f"change detected at {i}, below {d.lower:.1f}")
    ...         break
    change detected at 62, below 91.0
    """

    warmup: int = 60
    tolerance: float = 1.0
    consecutive: int = 3
    min_spread: float = 1.0
    rel_spread: float = 0.0
    log: bool = False
    reference: list[float] = field(default_factory=list)
    ready: bool = False  # the reference window is complete and the range fitted
    lo: float = 0.0  # range bounds, in the transformed space
    hi: float = 0.0
    run: int = 0  # out-of-range values in a row
    last: float = 0.0  # last value, signal units

    def update(self, x: float) -> OutOfRange:
        self.last = x
        y = math.log1p(max(x, 0.0)) if self.log else x
        if not self.ready:
            self.reference.append(y)
            if len(self.reference) == self.warmup:
                self._fit()
            return self
        self.run = self.run + 1 if not (self.lo <= y <= self.hi) else 0
        return self

    def _fit(self) -> None:
        ref = sorted(self.reference)
        q05, q50, q95 = (ref[min(len(ref) - 1, int(q * len(ref)))] for q in (0.05, 0.5, 0.95))
        spread = max(q95 - q05, self.min_spread, self.rel_spread * abs(q50))
        self.lo, self.hi = q05 - self.tolerance * spread, q95 + self.tolerance * spread
        self.reference = []  # the range is all that is kept: state stays small
        self.ready = True

    def _signal_units(self, y: float) -> float:
        return math.expm1(y) if self.log else y

    @property
    def lower(self) -> float:
        """Lowest in-range value, signal units."""
        return self._signal_units(self.lo)

    @property
    def upper(self) -> float:
        """Highest in-range value, signal units."""
        return self._signal_units(self.hi)

    @property
    def centre(self) -> float:
        """The middle of the range, signal units (of its log with ``log=True``): the reference's typical value."""
        return self._signal_units((self.lo + self.hi) / 2)

    @property
    def threshold(self) -> float:
        """The bound the last value is nearest to (the one it crossed, when out of range)."""
        return self.lower if self.last < (self.lower + self.upper) / 2 else self.upper

    @property
    def drift_detected(self) -> bool:
        return self.ready and self.run >= self.consecutive

    def to_dict(self) -> dict:
        return asdict(self)


# Signals watched by the range rule: the floor of each one's spread, and whether it varies by factors.
WATCHED = {
    "brightness": {"min_spread": 10.0, "rel_spread": 0.15, "log": False},
    "blur": {"min_spread": 0.5, "log": True},  # sharpness at a standard contrast: light does not move it
    "contrast": {"min_spread": 0.4, "log": True},  # x0.67 to x1.5 beyond the reference's own spread
    "saturation": {"min_spread": 0.5, "log": True},  # another view (a new scene) shows in its colour first
}
# Contrast relative to brightness (100 std / mean of luma, %), which more or less light leaves as it is: a
# contrast out of range while this is in its range is the light's doing, and brightness is the alert.
RELATIVE_CONTRAST = {"min_spread": 0.1, "log": True}


def relative_contrast(contrast: float, brightness: float) -> float:
    """Luma std as a percentage of the mean (of at least 1): the same under more or less light.

    >>> relative_contrast(30.0, 120.0), relative_contrast(18.0, 72.0)  # dusk: light x0.6
    (25.0, 25.0)
    """
    return 100 * contrast / max(brightness, 1.0)


EVIDENCE_FRAMES = 5


@dataclass
class CameraHealth:
    """Everything the worker remembers about one camera, serialisable with :meth:`to_dict`."""

    camera_id: str
    detectors: dict[str, OutOfRange] = field(default_factory=dict)
    active: dict[str, str] = field(default_factory=dict)  # signal -> alert_id of the raised alert
    last_raised: dict[str, float] = field(default_factory=dict)  # signal -> unix s
    recent_frames: list[str] = field(default_factory=list)
    relative_contrast: OutOfRange | None = None  # contrast / brightness; None: contrast is never explained

    @classmethod
    def new(cls, camera_id: str, *, warmup: int, tolerance: float, consecutive: int) -> CameraHealth:
        dets = {
            name: OutOfRange(warmup=warmup, tolerance=tolerance, consecutive=consecutive, **floor)
            for name, floor in WATCHED.items()
        }
        relative = OutOfRange(warmup=warmup, tolerance=tolerance, consecutive=consecutive, **RELATIVE_CONTRAST)
        return cls(camera_id, dets, relative_contrast=relative)

    @classmethod
    def from_dict(cls, d: dict) -> CameraHealth:
        """The health ``d`` describes; a signal watched since it was saved starts learning its range, with the
        others' settings."""
        detectors = {k: OutOfRange(**v) for k, v in d["detectors"].items()}
        relative = OutOfRange(**d["relative_contrast"]) if d.get("relative_contrast") else None
        if detectors:
            some = next(iter(detectors.values()))
            settings = {"warmup": some.warmup, "tolerance": some.tolerance, "consecutive": some.consecutive}
            for name, floor in WATCHED.items():
                if name not in detectors:
                    detectors[name] = OutOfRange(**settings, **floor)
            if relative is None:
                relative = OutOfRange(**settings, **RELATIVE_CONTRAST)
        return cls(
            camera_id=d["camera_id"],
            detectors=detectors,
            active=dict(d["active"]),
            last_raised=dict(d["last_raised"]),
            relative_contrast=relative,
        )

    def explained(self, signal: str) -> bool:
        """Whether ``signal`` left its range by another's doing: contrast, when the contrast relative to
        brightness (:data:`RELATIVE_CONTRAST`) stayed in its own range (the light scales both alike);
        saturation below its range, when contrast is below its own."""
        if signal == "saturation":  # a picture washed out about its mean pales too: contrast is the alert
            c, sat = self.detectors["contrast"], self.detectors["saturation"]
            return c.run > 0 and c.last < c.lower and sat.last < sat.lower
        r = self.relative_contrast
        return signal == "contrast" and r is not None and r.ready and r.run == 0

    def to_dict(self) -> dict:
        """The state worth keeping across a restart. It changes only while the reference is learned and
        when a signal leaves or re-enters its range, so a steady camera writes nothing to the changelog;
        the evidence frame ids and last values refill within a few frames."""
        return {
            "camera_id": self.camera_id,
            "detectors": {k: {**v.to_dict(), "last": 0.0} for k, v in self.detectors.items()},
            "relative_contrast": {**self.relative_contrast.to_dict(), "last": 0.0} if self.relative_contrast else None,
            "active": dict(self.active),  # copies: a saved state must not change with the live object
            "last_raised": dict(self.last_raised),
        }

    def events(self) -> dict:
        """The part of :meth:`to_dict` that changes only on events: which signals have learned their range,
        the alerts raised. The warm-up samples and the out-of-range runs change with every frame; they are
        saved with the rest of the state every few frames."""
        return {
            "ready": sorted(k for k, v in self.detectors.items() if v.ready),
            "active": dict(self.active),
            "last_raised": dict(self.last_raised),
        }

    def observe(self, m: FrameMetrics, cooldown_s: float) -> list[Alert]:
        """Feed one frame's metrics; return the alerts raised or resolved by it."""
        changes = self.changes(m, cooldown_s)
        where = Where(m.camera_id, m.frame_id, m.model_name, m.model_version, m.processed_at, 0, self.recent_frames)
        return [make_alert(c, where, {}) for c in changes]

    def changes(self, m: FrameMetrics, cooldown_s: float) -> list[Change]:
        """Feed one frame's metrics; the signals it raised or cleared (with their alert ids)."""
        self.recent_frames = [*self.recent_frames[-(EVIDENCE_FRAMES - 1) :], m.frame_id]
        out = []
        if self.relative_contrast is not None:
            self.relative_contrast.update(relative_contrast(float(m.contrast), float(m.brightness)))
        for signal, det in self.detectors.items():
            value = float(getattr(m, signal))
            det.update(value)
            if det.drift_detected and signal not in self.active:
                if self.explained(signal):
                    continue
                if m.processed_at - self.last_raised.get(signal, -math.inf) < cooldown_s:
                    continue
                change = self._change(m, signal, det, "raised", alert_id(m.camera_id, signal, m.frame_id))
                self.active[signal] = change.alert_id
                self.last_raised[signal] = m.processed_at
                out.append(change)
            elif signal in self.active and det.run == 0:
                out.append(self._change(m, signal, det, "resolved", self.active.pop(signal)))
        return out

    def _change(self, m: FrameMetrics, signal: str, det: OutOfRange, status: str, alert_id: str) -> Change:
        direction = "above" if det.last > det.upper else "below"
        if status == "raised":
            text = (
                f"{signal} of camera {m.camera_id} is {det.last:.1f}, {direction} its reference range "
                f"{det.lower:.1f} to {det.upper:.1f}, for {det.run} frames"
            )
        else:
            text = f"{signal} of camera {m.camera_id} is back in its reference range ({det.last:.1f})"
        return Change("data_drift", signal, status, det.last, det.threshold, message=text, window=det.warmup,
                      alert_id=alert_id)  # fmt: skip


class RangeDetector(Detector):
    """:class:`CameraHealth` as a detector: ``data_drift`` on brightness, blur, contrast and saturation."""

    name = "health"
    missing = "error"

    def __init__(self, inner: CameraHealth):
        self.inner = inner

    @classmethod
    def new(cls, settings: Any, camera_id: str) -> RangeDetector:
        s = settings
        return cls(CameraHealth.new(camera_id, warmup=s.warmup, tolerance=s.tolerance, consecutive=s.consecutive))

    def observe(self, obs: Observation) -> list[Change]:
        return self.inner.changes(obs.metrics, obs.cooldown_s) if isinstance(obs, Frame) else []

    def statistics(self) -> list[DriftStatistic]:
        return []

    def configure(self, settings: Any) -> None:
        for rule in self.inner.detectors.values():
            rule.consecutive = settings.consecutive

    def forget(self) -> list[tuple[str, str, str]]:
        out = [("data_drift", signal, aid) for signal, aid in self.inner.active.items()]
        self.inner.active.clear()
        return out

    def essential(self) -> object:
        return self.inner.events()

    def to_dict(self) -> dict:
        return self.inner.to_dict()

    @classmethod
    def from_dict(cls, d: dict) -> RangeDetector:
        return cls(CameraHealth.from_dict(d))
