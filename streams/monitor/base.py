"""The detector protocol: what every monitor of a camera is, and the one place its changes become alerts.

A detector lives the same life whatever it watches, the way River's detectors do:

- :meth:`Detector.observe` takes one observation, a :class:`Frame` (a frame's metrics, its analysis copy and
  its detections), a :class:`Tick` (the worker's timer) or a :class:`Labelled` (the model's error on a frame
  that came back labelled), ignores the kinds it does not watch, and returns its :class:`Change` records:
  the signals it raised or cleared on that observation, with their value, threshold and a few words;
- :meth:`Detector.statistics` gives its statistics for the plots (:class:`core.contracts.DriftStatistic`);
- :meth:`Detector.to_dict` and :meth:`Detector.from_dict` are its state as data (JSON values), and
  :meth:`Detector.essential` the part of it that changes only on events;
- :meth:`Detector.new` builds it as the monitor settings configure it (or not at all: ``None``), and
  :meth:`Detector.configure` takes the settings that apply live.

:func:`make_alert` is the only place an :class:`~core.contracts.Alert` is built from a change; ids come from
:func:`alert_id`, deterministic, so a frame replayed after a crash raises the same alert.

A detector in a few lines (the camera monitor takes it with one line in :data:`streams.monitor.camera.DETECTORS`):

>>> class Dark(Detector):
...     name = "dark"
...     def __init__(self, on=False):
...         self.on = on
...     def observe(self, obs):
...         if not isinstance(obs, Frame) or (obs.metrics.brightness < 20) == self.on:
...             return []
...         self.on = not self.on
...         return [Change("device_fault", "dark", "raised" if self.on else "resolved", obs.metrics.brightness,
...                        20.0, f"brightness {obs.metrics.brightness:.0f}")]
...     def to_dict(self):
...         return {"on": self.on}
...     @classmethod
...     def from_dict(cls, d):
...         return cls(bool(d["on"]))
>>> Dark.from_dict(Dark(on=True).to_dict()).on
True
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from core.contracts import Alert, DriftStatistic, FrameMetrics


def alert_id(camera_id: str, signal: str, frame_id: str) -> str:
    """Deterministic: a frame replayed after a crash raises the same alert id, which the store folds
    into one row, instead of a second alert."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"cvops:{camera_id}/{signal}/{frame_id}"))


# -- observations ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One frame: its metrics, its grey analysis copy, when it arrived, and what the model found in it."""

    metrics: FrameMetrics
    small: np.ndarray
    arrived_at: float
    cooldown_s: float
    frame_diff: float | None
    black: bool
    over_exposed: float
    labels: Sequence[str] = ()
    scores: Sequence[float] = ()


@dataclass(frozen=True)
class Tick:
    """The worker's timer at ``now`` (unix s) for camera ``camera_id``: what happens without frames."""

    camera_id: str
    now: float


@dataclass(frozen=True)
class Labelled:
    """The model's ``error`` (0-1) on a frame that came back labelled, at ``at`` (unix s); the ``scores`` of the
    model's detections on it, whether each matched a true object (``hits``), and the true objects' number
    (``truths``): see :func:`streams.monitor.concept.match`."""

    frame_id: str
    error: float
    at: float
    scores: Sequence[float] = ()
    hits: Sequence[bool] = ()
    truths: int = 0


Observation = Frame | Tick | Labelled


# -- changes and alerts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """A signal raised or cleared by a detector: the alert it becomes, less where and when.

    ``text`` ends the standard message (``"<type> raised on camera <id>: <text>"``); ``message`` replaces the
    whole of it. ``window`` defaults to the frames the camera's monitor has seen. The alert id of a raise is
    :func:`alert_id` of the camera, ``id_signal`` (default ``"<type>/<signal>"``) and ``id_frame`` (default
    the frame's id), and a resolve carries its raise's; a detector that keeps its alerts' ids itself gives
    ``alert_id``.
    """

    type: str
    signal: str
    status: Literal["raised", "resolved"]
    value: float
    threshold: float
    text: str = ""
    message: str | None = None
    window: int | None = None
    id_signal: str | None = None
    id_frame: str | None = None
    alert_id: str | None = None
    severity: str | None = None  # default: critical for a device fault, else warning
    caused_by: str = ""

    @property
    def key(self) -> str:
        return f"{self.type}:{self.signal}"


@dataclass(frozen=True)
class Where:
    """Where and when changes happen: the camera, the frame (or timer tick) and the model, and the frames
    shown as evidence."""

    camera_id: str
    frame_id: str
    model_name: str
    model_version: str
    at: float
    frames: int  # the frames the camera's monitor has seen
    evidence: Sequence[str] = ()


def make_alert(c: Change, where: Where, active: dict[str, str]) -> Alert:
    """The alert of change ``c`` at ``where``. ``active`` ("type:signal" -> id of the raise) gets the id of
    a raise, and gives back a resolve's (a resolve without its raise gets the id of an unknown frame)."""
    id_signal = c.id_signal or f"{c.type}/{c.signal}"
    aid = c.alert_id
    if aid is None and c.status == "raised":
        aid = active[c.key] = alert_id(where.camera_id, id_signal, c.id_frame or where.frame_id)
    elif aid is None:
        aid = active.pop(c.key, None) or alert_id(where.camera_id, id_signal, "unknown")
    verb = "raised" if c.status == "raised" else "cleared"
    return Alert(
        alert_id=aid,
        type=c.type,
        status=c.status,
        severity=c.severity or ("critical" if c.type == "device_fault" else "warning"),
        camera_id=where.camera_id,
        signal=c.signal,
        value=c.value,
        threshold=c.threshold,
        window=where.frames if c.window is None else c.window,
        model_name=where.model_name,
        model_version=where.model_version,
        evidence_frame_ids=list(where.evidence),
        raised_at=where.at,
        message=c.message
        if c.message is not None
        else f"{c.type.replace('_', ' ')} {verb} on camera {where.camera_id}: {c.text}",
        caused_by=c.caused_by,
    )


def flips(was: bool, now: bool, kind: str, signal: str) -> list[tuple[str, str, str]]:
    """``[(kind, signal, "raised" or "resolved")]`` when a verdict went from ``was`` to ``now``, else ``[]``."""
    return [] if was == now else [(kind, signal, "raised" if now else "resolved")]


def set_changes(before: set[str], after: set[str]) -> list[tuple[str, str]]:
    """The signals of ``after`` not in ``before``, raised, then those gone, resolved (each sorted)."""
    return [(k, "raised") for k in sorted(after - before)] + [(k, "resolved") for k in sorted(before - after)]


def statistic(detector: str, signal: str, value: float, threshold: float, drift: bool, window: int) -> list:
    """A :class:`DriftStatistic` in a list, or an empty list when a figure is not finite; figures held to the
    contract's bounds (a z-score over a constant reference can be huge, never a crash)."""
    if not (math.isfinite(value) and math.isfinite(threshold)):
        return []
    value, threshold = (max(-1e12, min(1e12, v)) for v in (value, threshold))
    return [DriftStatistic(detector=detector, signal=signal, statistic=value, threshold=threshold, drift=drift,
                           window=window)]  # fmt: skip


# -- the protocol ---------------------------------------------------------------------------------------


class Detector:
    """One monitor of a camera. Subclasses set :attr:`name` (its key in the camera's state) and implement
    :meth:`observe`, :meth:`to_dict` and :meth:`from_dict`; the rest has defaults.

    :attr:`missing` says what a saved state without this detector gets: ``"new"`` (one as the settings
    configure it: a detector added since), ``"none"`` (none until the references are learned again), or
    ``"error"`` (the state cannot be read: the camera learns again).
    """

    name: ClassVar[str]
    missing: ClassVar[Literal["new", "none", "error"]] = "new"

    @classmethod
    def new(cls, settings: Any, camera_id: str) -> Detector | None:
        """This detector of camera ``camera_id`` as ``settings`` (the monitor settings) configure it, or None
        when they turn it off."""
        return cls()

    def observe(self, obs: Observation) -> list[Change]:
        """Take one observation; what it raised or cleared."""
        raise NotImplementedError

    def brewing(self) -> set[str]:
        """Causes building up that have not raised yet ("type:signal"): see :mod:`streams.monitor.policy`."""
        return set()

    def statistics(self) -> list[DriftStatistic]:
        """Its statistics now, for the plots; none while it is learning its reference."""
        return []

    def configure(self, settings: Any) -> None:
        """Take the settings that apply live (thresholds); sizes apply when references are learned again."""

    def annotate(self, metrics: FrameMetrics) -> dict:
        """Fields it adds to the metrics of a frame it has just observed (most add none)."""
        return {}

    def sampled(self) -> None:
        """Its :meth:`statistics` were just sampled for the plots (a peak since the last sample starts over)."""

    def forget(self) -> list[tuple[str, str, str]]:
        """The (type, signal, alert id) of the open alerts it keeps the ids of itself, forgotten: the camera
        learns its references again. Most keep none (the camera's monitor keeps them)."""
        return []

    def essential(self) -> object:
        """The part of its state that changes only on events (a verdict, a reference learned)."""
        return None

    def to_dict(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, d: dict) -> Detector:
        raise NotImplementedError
