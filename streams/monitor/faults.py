"""Device faults of one camera feed, kept apart from drift: the camera or its link is broken, not the scene.

:class:`FeedHealth` takes the times and image signals of each frame, and an explicit ``now`` when asked
about a silent feed: it never reads a clock, so it is a pure function of what it is given.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Mapping
from typing import Any

from streams.monitor.base import Change, Detector, Frame, Observation, Tick
from streams.monitor.state import integer, number

NO_FRAMES = "no_frames"  # nothing arrived for longer than no_frames_s
LOW_FPS = "low_fps"  # capture rate below the expected rate
FROZEN = "frozen"  # the same picture again and again
BLACK = "black"  # black frames in a row
OVER_EXPOSED = "over_exposed"  # mostly clipped white, in a row
CLOCK_SKEW = "clock_skew"  # the camera's clock disagrees with ours
FAULTS = (NO_FRAMES, LOW_FPS, FROZEN, BLACK, OVER_EXPOSED, CLOCK_SKEW)


class FeedHealth:
    """Device faults of one camera, each raised and cleared on its own.

    - ``no_frames``: no frame arrived for more than ``no_frames_s`` seconds; checked by :meth:`check`
      with the caller's ``now`` (the worker's timer). Raised when ``confirm_checks`` checks in a row find the
      feed silent with no frame between them, resolved when ``resume_frames`` frames have come with no silent
      check between them, so that a feed does not flap between silent and back. The silence is judged on
      the frames the worker has reached, not on how far behind it is: when a frame comes that had arrived
      before the last check (the worker was working through a backlog), ``now`` ran ahead of the frames by
      that much (the *lead*, at most ``10 * no_frames_s``), and the next checks take it off.
    - ``low_fps``: over the last ``fps_window`` capture times, frames per second below
      ``expected_fps * (1 - fps_tolerance)``.
    - ``frozen``: ``frame_diff`` below ``frozen_eps`` (0-255) for ``run_frames`` frames in a row. A
      re-sent picture decodes to the same pixels (diff 0); a live static scene still has sensor noise.
    - ``black``: ``run_frames`` black frames in a row.
    - ``over_exposed``: share of clipped pixels above ``over_exposed_share`` for ``run_frames`` in a row.
    - ``clock_skew``: the median of ``arrived_at - captured_at`` over the last ``skew_window`` frames
      beyond ``skew_s`` seconds either way. Pass the broker's record timestamp as ``arrived_at``, not
      the time the worker reads it: a backlog in the worker would otherwise look like a skewed clock.

    Run faults clear at the first frame without the fault; the windowed ones when the window is back
    within bounds. :attr:`changes` lists what the last call raised and cleared, as (fault, "raised" |
    "resolved"), for the alerts to send.

    State: two bounded deques of floats and a few counters: about 1.2 KB as JSON with windows of 25.

    >>> h = FeedHealth(expected_fps=5, run_frames=3)
    >>> for i in range(30):  # 5 fps, then the same picture from frame 20
    ...     t = 1000.0 + i / 5
    ...     if h.update(captured_at=t, arrived_at=t + 0.1, frame_diff=0.0 if i >= 20 else 4.0).changes:
    ...         print(i, h.changes)
    22 [('frozen', 'raised')]
    >>> h.check(now=1030.0).changes, h.check(now=1031.0).changes
    ([], [('no_frames', 'raised')])
    >>> sorted(h.faults)
    ['frozen', 'no_frames']
    """

    def __init__(
        self,
        expected_fps: float = 5.0,
        fps_tolerance: float = 0.5,
        fps_window: int = 25,
        no_frames_s: float = 10.0,
        frozen_eps: float = 0.2,
        run_frames: int = 10,
        over_exposed_share: float = 0.5,
        skew_s: float = 2.0,
        skew_window: int = 25,
        confirm_checks: int = 2,
        resume_frames: int = 5,
    ):
        self.expected_fps = expected_fps
        self.fps_tolerance = fps_tolerance
        self.fps_window = fps_window
        self.no_frames_s = no_frames_s
        self.frozen_eps = frozen_eps
        self.run_frames = run_frames
        self.over_exposed_share = over_exposed_share
        self.skew_s = skew_s
        self.skew_window = skew_window
        self.confirm_checks = confirm_checks
        self.resume_frames = resume_frames
        self.captured: deque[float] = deque(maxlen=fps_window)
        self.delays: deque[float] = deque(maxlen=skew_window)  # arrived_at - captured_at, s
        self.last_arrival: float | None = None
        self.last_check: float | None = None  # the ``now`` of the last check
        self.lead = 0.0  # s that the checks' clock runs ahead of the frames the worker has reached
        self.silent_checks = 0  # silent checks in a row, no frame between them
        self.resumed = 0  # frames since the feed was found silent, no silent check between them
        self.runs = {FROZEN: 0, BLACK: 0, OVER_EXPOSED: 0}
        self.faults: set[str] = set()
        self.changes: list[tuple[str, str]] = []

    def _set(self, fault: str, on: bool) -> None:
        if on and fault not in self.faults:
            self.faults.add(fault)
            self.changes.append((fault, "raised"))
        elif not on and fault in self.faults:
            self.faults.discard(fault)
            self.changes.append((fault, "resolved"))

    @property
    def fps(self) -> float | None:
        """Capture rate over the window, frames/s; None until the window is full."""
        if len(self.captured) < self.fps_window:
            return None
        span = self.captured[-1] - self.captured[0]
        return (len(self.captured) - 1) / span if span > 0 else float("inf")

    @property
    def skew(self) -> float | None:
        """Median of arrival minus capture time over the window, s; None until the window is full."""
        return statistics.median(self.delays) if len(self.delays) == self.skew_window else None

    def update(
        self,
        captured_at: float,
        arrived_at: float,
        frame_diff: float | None = None,
        black: bool = False,
        over_exposed: float = 0.0,
    ) -> FeedHealth:
        """One frame: its capture and arrival times (unix s) and its image signals
        (:class:`streams.monitor.image.ImageSignals`: ``frame_diff``, ``black``, ``over_exposed``)."""
        self.changes = []
        # The last arrival, not the latest ever: one record stamped ahead must not hide a silence until then.
        self.last_arrival = arrived_at
        if self.last_check is not None:
            self.lead = min(max(0.0, self.last_check - arrived_at), 10 * self.no_frames_s)
        self.silent_checks = 0
        self.resumed = min(self.resumed + 1, self.resume_frames)
        if self.resumed >= self.resume_frames:
            self._set(NO_FRAMES, False)
        self.captured.append(captured_at)
        self.delays.append(arrived_at - captured_at)
        fps = self.fps
        if fps is not None:
            self._set(LOW_FPS, fps < self.expected_fps * (1 - self.fps_tolerance))
        skew = self.skew
        if skew is not None:
            self._set(CLOCK_SKEW, abs(skew) > self.skew_s)
        frozen = frame_diff is not None and frame_diff < self.frozen_eps
        for fault, on in ((FROZEN, frozen), (BLACK, black), (OVER_EXPOSED, over_exposed > self.over_exposed_share)):
            self.runs[fault] = self.runs[fault] + 1 if on else 0
            self._set(fault, self.runs[fault] >= self.run_frames)
        return self

    def check(self, now: float) -> FeedHealth:
        """Whether the feed has gone silent by ``now`` (unix s, the caller's clock)."""
        self.changes = []
        self.last_check = now
        silent = self.silent_for(now) > self.no_frames_s
        if silent:
            self.silent_checks += 1
            self.resumed = 0
            if self.silent_checks >= self.confirm_checks:
                self._set(NO_FRAMES, True)
        return self

    def silent_for(self, now: float) -> float:
        """Seconds without a frame by ``now``, less the checks' lead over the frames (0 before the first)."""
        return 0.0 if self.last_arrival is None else max(0.0, now - self.lead - self.last_arrival)

    @property
    def fault_detected(self) -> bool:
        return bool(self.faults)

    def to_dict(self) -> dict:
        return {
            "params": {
                "expected_fps": self.expected_fps,
                "fps_tolerance": self.fps_tolerance,
                "fps_window": self.fps_window,
                "no_frames_s": self.no_frames_s,
                "frozen_eps": self.frozen_eps,
                "run_frames": self.run_frames,
                "over_exposed_share": self.over_exposed_share,
                "skew_s": self.skew_s,
                "skew_window": self.skew_window,
                "confirm_checks": self.confirm_checks,
                "resume_frames": self.resume_frames,
            },
            "captured": list(self.captured),
            "delays": list(self.delays),
            "last_arrival": self.last_arrival,
            "last_check": self.last_check,
            "lead": self.lead,
            "silent_checks": self.silent_checks,
            "resumed": self.resumed,
            "runs": dict(self.runs),
            "faults": sorted(self.faults),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> FeedHealth:
        obj = cls(**d["params"])
        obj.captured.extend(d["captured"])
        obj.delays.extend(d["delays"])
        obj.last_arrival = d["last_arrival"]
        obj.runs = dict(d["runs"])
        obj.faults = set(d["faults"])
        # Saved before the silence had hysteresis: no lead known yet, a silence raised resolves as before.
        last_check = d.get("last_check")
        obj.last_check = None if last_check is None else number(last_check, "last_check")
        obj.lead = number(d.get("lead", 0.0), "lead", lo=0.0)
        obj.silent_checks = integer(d.get("silent_checks", 0), "silent_checks")
        obj.resumed = integer(d.get("resumed", 0), "resumed")
        return obj


class FeedDetector(Detector):
    """:class:`FeedHealth` as a detector of the camera's monitor: ``device_fault`` alerts, from frames and, for a
    silent feed, from the worker's timer."""

    name = "feed"
    missing = "error"

    def __init__(self, inner: FeedHealth):
        self.inner = inner

    @classmethod
    def new(cls, settings: Any, camera_id: str) -> FeedDetector:
        return cls(FeedHealth(expected_fps=settings.expected_fps, no_frames_s=settings.no_frames_s))

    def observe(self, obs: Observation) -> list[Change]:
        f = self.inner
        if isinstance(obs, Frame):
            m = obs.metrics
            f.update(captured_at=m.captured_at, arrived_at=obs.arrived_at, frame_diff=obs.frame_diff,
                     black=obs.black, over_exposed=obs.over_exposed)  # fmt: skip
            return [Change("device_fault", fault, status, *self._value(fault)) for fault, status in f.changes]
        if not isinstance(obs, Tick):
            return []
        f.check(obs.now)
        out = []
        for fault, status in f.changes:
            gap = f.silent_for(obs.now)  # less the checks' lead while the worker catches up on a backlog
            out.append(
                Change("device_fault", fault, status, gap, f.no_frames_s, window=0, id_signal=fault,
                       id_frame=f"silent-since-{f.last_arrival}",
                       message=f"camera {obs.camera_id} sent no frame for {gap:.0f} s")
            )  # fmt: skip
        return out

    def _value(self, fault: str) -> tuple[float, float, str]:
        f = self.inner
        if fault == LOW_FPS:
            return f.fps or 0.0, f.expected_fps * (1 - f.fps_tolerance), f"{f.fps or 0:.1f} frames/s"
        if fault == NO_FRAMES:
            return 0.0, f.no_frames_s, "frames arrive again"
        if fault == CLOCK_SKEW:
            return f.skew or 0.0, f.skew_s, f"capture clock off by {f.skew or 0:.1f} s"
        return float(f.runs.get(fault, 0)), float(f.run_frames), f"{fault.replace('_', ' ')} frames in a row"

    def brewing(self) -> set[str]:
        return {f"device_fault:{f}" for f, run in self.inner.runs.items() if run and f not in self.inner.faults}

    def configure(self, settings: Any) -> None:
        self.inner.expected_fps, self.inner.no_frames_s = settings.expected_fps, settings.no_frames_s

    def essential(self) -> object:
        return sorted(self.inner.faults)

    def to_dict(self) -> dict:
        return self.inner.to_dict()

    @classmethod
    def from_dict(cls, d: dict) -> FeedDetector:
        return cls(FeedHealth.from_dict(d))
