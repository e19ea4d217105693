"""Upstream drift: the camera or its gateway now sends something else than it did in its reference.

Resolution, aspect ratio, encoding, frame rate and bytes per pixel (a proxy for compression quality) are
learned from the camera's first frames; a change is a configuration change upstream (a firmware update,
a new stream profile), not a fault: :class:`streams.monitor.faults.FeedHealth` watches the rate against
what it should be, this against what it was.
"""

from __future__ import annotations

import statistics
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

from streams.monitor.base import Change, Detector, Frame, Observation, set_changes

RESOLUTION = "resolution"
ASPECT_RATIO = "aspect_ratio"
ENCODING = "encoding"
FRAME_RATE = "frame_rate"
BYTES_PER_PIXEL = "bytes_per_pixel"


class UpstreamDrift:
    """Flags a camera whose stream format has changed against its reference.

    The first ``reference`` frames set the reference: the most common resolution and encoding, the
    median interval between capture times (its inverse is the frame rate) and the median bytes per
    pixel. After that:

    - ``resolution`` / ``aspect_ratio`` / ``encoding`` drift when ``consecutive`` frames in a row differ
      (aspect ratio by more than ``aspect_tolerance``, relative), and clear on the first frame that
      matches again;
    - ``frame_rate`` drifts while the median interval over the last ``window`` frames is off the
      reference by more than ``rate_tolerance`` (relative), either way;
    - ``bytes_per_pixel`` (only when ``nbytes`` is given) drifts while its median over the window is
      more than ``bpp_factor`` times off, either way: the scene changes it too (night, rain), so the
      factor is wide.

    State: reference figures and two windows of floats: about 2.5 KB as JSON for the defaults (50, 25).

    >>> d = UpstreamDrift(reference=10, window=10, consecutive=2)
    >>> for i in range(40):
    ...     w, h, t = (1920, 1080, i / 5) if i < 25 else (1280, 720, 5 + (i - 25) / 2)  # new profile at 25
    ...     if d.update(w, h, "jpeg", captured_at=1000 + t).drift_detected:
    ...         print(i, sorted(d.drifted))
    ...         break
    26 ['resolution']
    >>> for i in range(40, 50):
    ...     _ = d.update(1280, 720, "jpeg", captured_at=1000 + 5 + (i - 25) / 2)
    >>> sorted(d.drifted), round(d.frame_rate, 1), round(d.reference_fps, 1)
    (['frame_rate', 'resolution'], 2.0, 5.0)
    """

    def __init__(
        self,
        reference: int = 50,
        window: int = 25,
        consecutive: int = 3,
        aspect_tolerance: float = 0.01,
        rate_tolerance: float = 0.2,
        bpp_factor: float = 2.5,
    ):
        self.reference_size = reference
        self.window_size = window
        self.consecutive = consecutive
        self.aspect_tolerance = aspect_tolerance
        self.rate_tolerance = rate_tolerance
        self.bpp_factor = bpp_factor
        self.n = 0
        # While learning: counts of what was seen; then the reference figures.
        self._resolutions: Counter[str] = Counter()
        self._encodings: Counter[str] = Counter()
        self.ref_resolution: tuple[int, int] | None = None
        self.ref_encoding: str | None = None
        self.ref_interval: float | None = None  # s
        self.ref_bpp: float | None = None
        self.last_captured: float | None = None
        self.intervals: deque[float] = deque(maxlen=max(window, reference))
        self.bpps: deque[float] = deque(maxlen=max(window, reference))
        self.runs = {RESOLUTION: 0, ASPECT_RATIO: 0, ENCODING: 0}
        self.drifted: set[str] = set()

    @property
    def ready(self) -> bool:
        return self.ref_resolution is not None

    @property
    def reference_fps(self) -> float | None:
        return 1 / self.ref_interval if self.ref_interval else None

    @property
    def frame_rate(self) -> float | None:
        """Frames/s over the recent window (median interval)."""
        recent = list(self.intervals)[-self.window_size :]
        if not recent:
            return None
        m = statistics.median(recent)
        return 1 / m if m > 0 else None

    def update(
        self, width: int, height: int, encoding: str, captured_at: float, nbytes: int | None = None
    ) -> UpstreamDrift:
        """One frame: decoded size (px), encoding (jpeg, png, webp), capture time (unix s), encoded size."""
        self.n += 1
        if self.last_captured is not None and captured_at > self.last_captured:
            self.intervals.append(captured_at - self.last_captured)
        # The last capture time seen, not the greatest: after one frame stamped far ahead, the intervals
        # of the frames that follow count again from the next one.
        self.last_captured = captured_at
        if nbytes is not None and width * height > 0:
            self.bpps.append(nbytes / (width * height))
        if not self.ready:
            self._resolutions[f"{width}x{height}"] += 1
            self._encodings[encoding] += 1
            if self.n >= self.reference_size:
                self._fit()
            return self
        rw, rh = self.ref_resolution
        ratio = (width / height) / (rw / rh)
        checks = {
            RESOLUTION: (width, height) != (rw, rh),
            ASPECT_RATIO: abs(ratio - 1) > self.aspect_tolerance,
            ENCODING: encoding != self.ref_encoding,
        }
        for name, off in checks.items():
            self.runs[name] = self.runs[name] + 1 if off else 0
            self._set(name, self.runs[name] >= self.consecutive)
        if len(self.intervals) >= self.window_size and self.ref_interval:
            fps = self.frame_rate
            self._set(FRAME_RATE, fps is None or abs(fps * self.ref_interval - 1) > self.rate_tolerance)
        if self.ref_bpp and len(self.bpps) >= self.window_size:
            bpp = statistics.median(list(self.bpps)[-self.window_size :]) / self.ref_bpp
            self._set(BYTES_PER_PIXEL, not 1 / self.bpp_factor <= bpp <= self.bpp_factor)
        return self

    def _set(self, name: str, on: bool) -> None:
        if on:
            self.drifted.add(name)
        else:
            self.drifted.discard(name)

    def _fit(self) -> None:
        res = self._resolutions.most_common(1)[0][0]
        w, h = res.split("x")
        self.ref_resolution = (int(w), int(h))
        self.ref_encoding = self._encodings.most_common(1)[0][0]
        self.ref_interval = statistics.median(self.intervals) if self.intervals else None
        self.ref_bpp = statistics.median(self.bpps) if self.bpps else None
        self._resolutions, self._encodings = Counter(), Counter()

    @property
    def drift_detected(self) -> bool:
        return bool(self.drifted)

    def to_dict(self) -> dict:
        return {
            "params": {
                "reference": self.reference_size,
                "window": self.window_size,
                "consecutive": self.consecutive,
                "aspect_tolerance": self.aspect_tolerance,
                "rate_tolerance": self.rate_tolerance,
                "bpp_factor": self.bpp_factor,
            },
            "n": self.n,
            "resolutions": dict(self._resolutions),
            "encodings": dict(self._encodings),
            "ref_resolution": list(self.ref_resolution) if self.ref_resolution else None,
            "ref_encoding": self.ref_encoding,
            "ref_interval": self.ref_interval,
            "ref_bpp": self.ref_bpp,
            "last_captured": self.last_captured,
            "intervals": list(self.intervals),
            "bpps": list(self.bpps),
            "runs": dict(self.runs),
            "drifted": sorted(self.drifted),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> UpstreamDrift:
        obj = cls(**d["params"])
        obj.n = d["n"]
        obj._resolutions, obj._encodings = Counter(d["resolutions"]), Counter(d["encodings"])
        obj.ref_resolution = tuple(d["ref_resolution"]) if d["ref_resolution"] else None
        obj.ref_encoding, obj.ref_interval, obj.ref_bpp = d["ref_encoding"], d["ref_interval"], d["ref_bpp"]
        obj.last_captured = d["last_captured"]
        obj.intervals.extend(d["intervals"])
        obj.bpps.extend(d["bpps"])
        obj.runs, obj.drifted = dict(d["runs"]), set(d["drifted"])
        return obj


class UpstreamDetector(Detector):
    """:class:`UpstreamDrift` as a detector of the camera's monitor: ``upstream_drift`` alerts."""

    name = "upstream"
    missing = "error"

    def __init__(self, inner: UpstreamDrift):
        self.inner = inner

    @classmethod
    def new(cls, settings: Any, camera_id: str) -> UpstreamDetector:
        return cls(UpstreamDrift(reference=settings.warmup))

    def observe(self, obs: Observation) -> list[Change]:
        if not isinstance(obs, Frame):
            return []
        u, m = self.inner, obs.metrics
        before = set(u.drifted)
        u.update(m.width, m.height, m.encoding, captured_at=m.captured_at, nbytes=m.bytes)
        changes = set_changes(before, set(u.drifted))
        return [Change("upstream_drift", k, status, *self._value(k)) for k, status in changes]

    def _value(self, signal: str) -> tuple[float, float, str]:
        u = self.inner
        if signal == FRAME_RATE:
            return u.frame_rate or 0.0, u.reference_fps or 0.0, f"{u.frame_rate or 0:.1f} frames/s"
        if signal in (RESOLUTION, ASPECT_RATIO):
            w, h = u.ref_resolution or (0, 0)
            text = f"{signal.replace('_', ' ')} changed from {w}x{h}"
            return float(u.runs.get(signal, 0)), float(u.consecutive), text
        return float(u.runs.get(signal, 0)), float(u.consecutive), f"{signal.replace('_', ' ')} changed"

    def brewing(self) -> set[str]:
        u = self.inner
        return {f"upstream_drift:{k}" for k, run in u.runs.items() if run and k not in u.drifted}

    def essential(self) -> object:
        return sorted(self.inner.drifted)

    def to_dict(self) -> dict:
        return self.inner.to_dict()

    @classmethod
    def from_dict(cls, d: dict) -> UpstreamDetector:
        return cls(UpstreamDrift.from_dict(d))
