"""The camera monitor's settings, each declared once.

One :class:`MonitorSetting` per setting says everything about it: its name in :class:`MonitorSettings`
(what the monitor reads), its type, default and bounds, its ``CVOPS_`` environment variable (a field of
:class:`core.settings.Settings`), its field in :class:`core.contracts.MonitorOverrides` (the fleet's and each
camera's overrides on the config topic, when it can be overridden), and whether an override applies to a
running camera at once (``live``) or when the camera's references are next learned. The environment's
fields, the overrides' fields, :class:`MonitorSettings` and the tables of :mod:`core.fleetconfig` are all
made from :data:`MONITOR_SETTINGS`; ``python -m cli.reference`` writes the configuration reference from it.

Bounds hold wherever a value is read (the environment and the overrides); ``override_max`` caps what an
override may set on top of them, so that a typing slip through the API cannot ask a camera for a million
frames of reference.

>>> s = MonitorSettings(warmup=20)
>>> (s.warmup, s.consecutive, s.ks_alpha)
(20, 10, 0.001)
>>> by_name()["consecutive"].env, by_name()["consecutive"].override, by_name()["consecutive"].live
('rule_consecutive', 'rule_consecutive', True)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field


@dataclass(frozen=True)
class MonitorSetting:
    """One setting of the camera monitor: where it is read, its type, default and bounds."""

    name: str  # field of MonitorSettings
    type: type  # int or float
    default: int | float
    description: str
    env: str | None = None  # field of core.settings.Settings (variable CVOPS_<ENV>); None: not read from it
    override: str | None = None  # field of MonitorOverrides; None: not per camera
    live: bool = False  # an override applies to a running camera at once; else when its references are learned
    bounds: Mapping[str, float] = field(default_factory=dict)  # pydantic's ge, gt, le, lt, wherever it is read
    override_max: float | None = None  # le of the override on top of the bounds

    @property
    def variable(self) -> str | None:
        """The environment variable, e.g. ``CVOPS_RULE_WARMUP_FRAMES``."""
        return f"CVOPS_{self.env.upper()}" if self.env else None


def _s(name, type_, default, description, **kw) -> MonitorSetting:
    return MonitorSetting(name, type_, default, description, **kw)


# In the order of MonitorSettings, of the overrides' schema and of the reference.
MONITOR_SETTINGS: tuple[MonitorSetting, ...] = (
    # The range rule: brightness, blur, contrast and saturation against the camera's recent range.
    _s("warmup", int, 150, "frames in a camera's reference window",
       env="rule_warmup_frames", override="rule_warmup_frames", bounds={"ge": 5}, override_max=100_000),
    _s("tolerance", float, 1.0, "range = reference 5-95% widened by this many spreads",
       env="rule_tolerance", override="rule_tolerance", bounds={"gt": 0}, override_max=100),
    _s("consecutive", int, 10, "frames out of range in a row before alerting (2 s at 5 frames/s)",
       env="rule_consecutive", override="rule_consecutive", live=True, bounds={"ge": 1}, override_max=10_000),
    # Feed health.
    _s("expected_fps", float, 5.0, "frame rate cameras should deliver (low_fps below half)",
       env="monitor_expected_fps", override="expected_fps", live=True, bounds={"gt": 0}, override_max=1000),
    _s("no_frames_s", float, 10.0, "silence after which a camera is reported",
       env="monitor_no_frames_s", override="no_frames_s", live=True, bounds={"gt": 0}, override_max=86_400),
    # The moved-camera check.
    _s("motion_every", int, 10, "compare with the reference view every N frames; 0 = off",
       env="monitor_motion_every", override="motion_every", bounds={"ge": 0}, override_max=100_000),
    _s("motion_threshold_deg", float, 2.0, "a turn of more than this against the reference view is a move, degrees",
       override="motion_threshold_deg", live=True, bounds={"gt": 0}, override_max=180),
    _s("motion_threshold_px", float, 8.0, "a shift of more than this against the reference view is a move, px",
       override="motion_threshold_px", live=True, bounds={"gt": 0}, override_max=10_000),
    # Distribution tests (KS with Holm's correction) of the image signals: values, not seconds.
    _s("ks_reference", int, 600,
       "frames in a camera's reference window for the KS tests of its image signals (kept as 200 quantiles); "
       "0 = off",
       env="monitor_ks_reference", override="ks_reference", bounds={"ge": 0}, override_max=100_000),
    _s("ks_window", int, 100, "frames in the sliding window tested against it",
       env="monitor_ks_window", override="ks_window", bounds={"ge": 10}, override_max=100_000),
    _s("ks_every", int, 10, "frames between two rounds of the KS tests"),
    _s("ks_alpha", float, 0.001, "chance of any false data_drift alert per test round (Holm-corrected)",
       env="monitor_ks_alpha", override="ks_alpha", live=True, bounds={"gt": 0, "lt": 1}),
    # Prediction drift: detections, not frames.
    _s("prediction_reference", int, 500,
       "detections in a camera's reference for class-mix and confidence drift; 0 = off",
       env="monitor_prediction_reference", override="prediction_reference", bounds={"ge": 0}, override_max=1_000_000),
    _s("prediction_window", int, 200, "recent detections tested against it",
       env="monitor_prediction_window", override="prediction_window", bounds={"ge": 10}, override_max=1_000_000),
    _s("prediction_alpha", float, 0.001, "chance of a false class-mix alert per test round",
       override="prediction_alpha", live=True, bounds={"gt": 0, "lt": 1}),
    _s("prediction_reference_frames", int, 1000,
       "frames with detections the prediction reference spans at least (so that it sees objects come and go)",
       env="monitor_prediction_reference_frames", override="prediction_reference_frames", bounds={"ge": 1},
       override_max=1_000_000),
    _s("prediction_window_frames", int, 300, "frames with detections the recent window spans at least",
       env="monitor_prediction_window_frames", override="prediction_window_frames", bounds={"ge": 1},
       override_max=1_000_000),
    # Performance without labels (streams.monitor.performance): frames with detections.
    _s("performance_reference", int, 1000,
       "frames with detections in a camera's reference expected precision (confidence-based, calibrated on "
       "labelled frames); 0 = off",
       env="monitor_performance_reference", override="performance_reference", bounds={"ge": 0},
       override_max=1_000_000),
    _s("performance_window", int, 300, "recent frames with detections the expected precision is estimated over",
       env="monitor_performance_window", override="performance_window", bounds={"ge": 10}, override_max=1_000_000),
    _s("performance_drop", float, 0.1,
       "fall of the expected precision below the camera's reference that raises prediction_drift "
       "(expected_precision)",
       env="monitor_performance_drop", override="performance_drop", live=True, bounds={"gt": 0, "lt": 1}),
    # Embedding drift and outliers: sampled embeddings (one frame in CVOPS_EMBEDDING_EVERY).
    _s("embedding_reference", int, 50,
       "sampled embeddings an outlier autoencoder is fitted on, per camera; 0 = off (also when "
       "CVOPS_EMBEDDING_MODEL is empty)",
       env="monitor_embedding_reference", override="embedding_reference", bounds={"ge": 0}, override_max=100_000),
    # Concept drift: labelled frames that came back on the feedback topic.
    _s("concept_reference", int, 100, "labelled frames (feedback topic) in a camera's reference error; 0 = off",
       env="monitor_concept_reference", override="concept_reference", bounds={"ge": 0}, override_max=1_000_000),
    # The alert policy (streams.monitor.policy, docs/alerts.md).
    _s("alert_holdoff_s", float, 300.0,
       "seconds a statistical alert's clear is held (a raise within it is the same alert) and a cause's "
       "after-effects are its symptoms (docs/alerts.md); 0 = clears are sent at once",
       env="alert_holdoff_s", bounds={"ge": 0, "le": 86_400}),
)  # fmt: skip


def by_name() -> dict[str, MonitorSetting]:
    return {s.name: s for s in MONITOR_SETTINGS}


def environment_fields() -> dict[str, Any]:
    """Fields of :class:`core.settings.Settings` (for ``pydantic.create_model``), by their variable's name."""
    return {s.env: (s.type, Field(s.default, description=s.description, **s.bounds)) for s in MONITOR_SETTINGS if s.env}


def override_fields() -> dict[str, Any]:
    """Fields of :class:`core.contracts.MonitorOverrides` (for ``pydantic.create_model``): all optional."""
    out = {}
    for s in MONITOR_SETTINGS:
        if s.override:
            cap = {} if s.override_max is None else {"le": s.override_max}
            out[s.override] = (s.type | None, Field(None, **s.bounds, **cap))
    return out


def _number(value: float) -> str:
    """``60``, ``1.0`` as ``1``, ``0.001``, ``1000000``: as a person writes it in a variable."""
    return str(int(value)) if float(value).is_integer() else repr(value)


def reference() -> str:
    """The Markdown table of the monitor's settings: variable, override, default, bounds, when an override
    applies, meaning (part of docs/configuration.md, which ``python -m cli.reference`` writes)."""
    signs = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    rows = [
        "| variable | per camera | default | bounds | an override applies | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for s in MONITOR_SETTINGS:
        if not (s.env or s.override):
            continue
        limits = [f"{signs[k]} {_number(v)}" for k, v in s.bounds.items()]
        if s.override_max is not None:
            limits.append(f"≤ {_number(s.override_max)} per camera")
        applies = "" if not s.override else "at once" if s.live else "at the next relearn"
        rows.append(
            f"| {f'`{s.variable}`' if s.env else '(none)'} | {f'`{s.override}`' if s.override else ''} | "
            f"`{_number(s.default)}` | {', '.join(limits)} | {applies} | {s.description} |"
        )
    return "\n".join(rows) + "\n"


def _settings_doc() -> str:
    lines = [f"    {s.name} = {s.default!r}: {s.description}" for s in MONITOR_SETTINGS]
    return "The settings one camera is watched with (declared in :data:`MONITOR_SETTINGS`):\n\n" + "\n".join(lines)


MonitorSettings = dataclasses.make_dataclass(
    "MonitorSettings", [(s.name, s.type, field(default=s.default)) for s in MONITOR_SETTINGS], frozen=True
)
MonitorSettings.__module__ = __name__
MonitorSettings.__doc__ = _settings_doc()
