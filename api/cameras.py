"""Cameras: the fleet with each camera's status, one camera in detail, and one signal over time.

Read from the store's small tables, never by scanning ``frame_metrics``: ``cameras`` (latest frame of each
camera, through the ``fleet_latest`` recipe), ``metrics_minute`` (per-minute sums, for fps and series) and
``alerts``.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from api.alerts import ALERT_COLUMNS, query_alerts
from api.auth import TOKEN_RESPONSES, read_access
from api.dependencies import ApiSettingsDep, NowDep, StoreDep
from api.instants import Instant, unix_s
from core.contracts import BELOW_DETECTORS, P_VALUE_DETECTORS, Alert
from store import Store
from store.cookbook import run as run_recipe

Status = Literal["ok", "warning", "alert", "offline"]
FPS_WINDOW_S = 60
MAX_POINTS = 10_000

router = APIRouter(tags=["cameras"], dependencies=[Depends(read_access)], responses=TOKEN_RESPONSES)


def camera_status(
    last_frame_at: float, now: float, active_alerts: int, recently_resolved: int, offline_after_s: float
) -> Status:
    """``offline`` when the newest frame is older than ``offline_after_s`` (s), else ``alert`` while an alert is
    raised and not resolved, else ``warning`` when one was resolved recently, else ``ok``.

    >>> camera_status(last_frame_at=100.0, now=130.0, active_alerts=1, recently_resolved=0, offline_after_s=60)
    'alert'
    >>> camera_status(last_frame_at=100.0, now=200.0, active_alerts=1, recently_resolved=0, offline_after_s=60)
    'offline'
    """
    if now - last_frame_at > offline_after_s:
        return "offline"
    if active_alerts:
        return "alert"
    if recently_resolved:
        return "warning"
    return "ok"


class LastFrame(BaseModel):
    frame_id: str
    captured_at: float = Field(description="unix s")
    model_version: str
    width: int = Field(description="px")
    height: int = Field(description="px")
    brightness: float = Field(description="mean luma, 0-255")
    blur: float = Field(description="variance of the Laplacian; lower is blurrier")
    inference_ms: float
    detections: int


class CameraSummary(BaseModel):
    camera_id: str
    status: Status
    last_frame_at: float = Field(description="capture time of the newest frame, unix s")
    first_seen_at: float = Field(description="capture time of the first frame stored, unix s")
    frames: int = Field(description="frames stored")
    fps: float = Field(description="frames per second since the start of the previous minute")
    active_alerts: int = Field(description="alerts raised and not resolved")
    recently_resolved_alerts: int = Field(description="alerts resolved within CVOPS_API_WARNING_AFTER_RESOLVED_S")
    last_frame: LastFrame
    view_at: float | None = Field(
        None, description="capture time of the camera's latest view (GET .../view.jpg), unix s; none yet: null"
    )
    reference_view_at: float | None = Field(
        None, description="capture time of its moved-camera reference view (GET .../view.jpg?role=reference)"
    )


class CameraDetail(CameraSummary):
    active: list[Alert] = Field(description="the raised records of the active alerts, newest first")
    recent_alerts: list[Alert] = Field(description="the 20 newest alert records, raised and resolved")


class Point(BaseModel):
    t: float = Field(description="start of the step, unix s")
    frames: int
    value: float | None = Field(description="mean per frame (mean signals) or total in the step (totals)")
    min: float | None = None
    max: float | None = None


class Series(BaseModel):
    camera_id: str
    signal: str
    kind: Literal["mean", "total"]
    step_s: int
    since: float = Field(description="unix s")
    until: float = Field(description="unix s")
    points: list[Point]


@dataclass(frozen=True)
class Signal:
    """How to read one signal from ``metrics_minute``: SQL over its column names, never over user input."""

    name: str
    kind: Literal["mean", "total"]
    value: str
    min: str = "NULL"
    max: str = "NULL"


_COLUMN = re.compile(r"^[a-z_][a-z0-9_]*$")


def signals_from_columns(columns: dict[str, str]) -> dict[str, Signal]:
    """The series allow-list, from ``metrics_minute``'s columns (name -> ClickHouse type): ``X_sum`` is read as
    the mean of X per frame (with ``X_min``, ``X_max`` when present), other sums as totals.

    >>> sorted(signals_from_columns({"frames": "SimpleAggregateFunction(sum, UInt64)",
    ...     "blur_sum": "SimpleAggregateFunction(sum, Float64)", "blur_min": "SimpleAggregateFunction(min, Float32)",
    ...     "first_at": "SimpleAggregateFunction(min, DateTime64(3, 'UTC'))"}).items())
    [('blur', Signal(name='blur', kind='mean', value='sum(blur_sum) / sum(frames)', min='min(blur_min)', max='NULL')), \
('frames', Signal(name='frames', kind='total', value='sum(frames)', min='NULL', max='NULL'))]
    """
    out = {}
    for name, type_ in columns.items():
        if not _COLUMN.match(name) or not type_.startswith("SimpleAggregateFunction(sum,"):
            continue
        if name.endswith("_sum"):
            base = name.removesuffix("_sum")
            low, high = f"{base}_min", f"{base}_max"
            out[base] = Signal(
                base,
                "mean",
                f"sum({name}) / sum(frames)",
                f"min({low})" if low in columns else "NULL",
                f"max({high})" if high in columns else "NULL",
            )
        else:
            out[name] = Signal(name, "total", f"sum({name})")
    return out


def series_signals(store: Store) -> dict[str, Signal]:
    rows = store.query(
        "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = 'metrics_minute'"
    )
    return signals_from_columns(dict(rows))


def fleet(store: Store, api_now: float, offline_after_s: float, warning_s: float) -> list[CameraSummary]:
    """Every camera in the ``cameras`` table, with its status as of ``api_now`` (unix s)."""
    latest = run_recipe(store, "fleet_latest")
    window_start = (int(api_now) - FPS_WINDOW_S) // 60 * 60
    fps_frames = dict(
        store.query(
            "SELECT camera_id, sum(frames) FROM metrics_minute WHERE minute >= toDateTime({start:Int64}, 'UTC') "
            "GROUP BY camera_id",
            {"start": window_start},
        )
    )
    states = {
        camera: (active, resolved)
        for camera, active, resolved in store.query(
            """
            SELECT camera_id, countIf(raised AND NOT resolved),
                   countIf(raised AND resolved AND resolved_at >= fromUnixTimestamp64Milli({recent:Int64}))
            FROM (
                SELECT camera_id, alert_id, countIf(status = 'raised') > 0 AS raised,
                       countIf(status = 'resolved') > 0 AS resolved,
                       maxIf(raised_at, status = 'resolved') AS resolved_at
                FROM alerts FINAL GROUP BY camera_id, alert_id
            )
            GROUP BY camera_id
            """,
            {"recent": round((api_now - warning_s) * 1000)},
        )
    }
    views = {
        (camera, role): unix_s(at)
        for camera, role, at in store.query("SELECT camera_id, role, max(captured_at) FROM camera_views GROUP BY 1, 2")
    }
    out = []
    for row in latest.rows:
        r = dict(zip(latest.columns, row, strict=True))
        last = unix_s(r["last_seen"])
        active, resolved = states.get(r["camera_id"], (0, 0))
        span = max(api_now - window_start, 1.0)
        out.append(
            CameraSummary(
                camera_id=r["camera_id"],
                status=camera_status(last, api_now, active, resolved, offline_after_s),
                last_frame_at=last,
                first_seen_at=unix_s(r["first_seen"]),
                frames=r["frames"],
                fps=round(fps_frames.get(r["camera_id"], 0) / span, 3),
                active_alerts=active,
                recently_resolved_alerts=resolved,
                last_frame=LastFrame(
                    frame_id=r["last_frame_id"],
                    captured_at=last,
                    model_version=r["model_version"],
                    width=r["width"],
                    height=r["height"],
                    brightness=_finite(r["brightness"]),
                    blur=_finite(r["blur"]),
                    inference_ms=_finite(r["inference_ms"]),
                    detections=r["detections"],
                ),
                view_at=views.get((r["camera_id"], "latest")),
                reference_view_at=views.get((r["camera_id"], "reference")),
            )
        )
    return out


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


CameraPath = Annotated[str, Path(min_length=1, max_length=200)]
Since = Annotated[Instant | None, Query(description="unix s or ISO 8601; default: an hour before until")]
Until = Annotated[Instant | None, Query(description="unix s or ISO 8601; default: now")]


def _range(since: dt.datetime | None, until: dt.datetime | None, step: int, now: float) -> tuple[float, float]:
    """The (start, end) unix s of a time-series request, or a 400 that says what is wrong with it."""
    end = until.timestamp() if until else now
    start = since.timestamp() if since else end - 3600
    if start >= end:
        raise HTTPException(status_code=400, detail="since must be before until")
    if (end - start) / step > MAX_POINTS:
        raise HTTPException(status_code=400, detail=f"more than {MAX_POINTS} points: narrow the range or raise step")
    return start, end


@router.get("/api/v1/cameras", response_model=list[CameraSummary])
def cameras(store: StoreDep, settings: ApiSettingsDep, now: NowDep) -> list[CameraSummary]:
    """Every camera seen: status (ok, warning, alert, offline), last frame time and signals, fps, alerts."""
    return fleet(store, now, settings.api_offline_after_s, settings.api_warning_after_resolved_s)


@router.get(
    "/api/v1/cameras/{camera_id}", response_model=CameraDetail, responses={404: {"description": "unknown camera"}}
)
def camera(camera_id: CameraPath, store: StoreDep, settings: ApiSettingsDep, now: NowDep) -> CameraDetail:
    """One camera: its summary, its active alerts and its latest alert records."""
    summary = _summary(store, camera_id, settings, now)
    active = store.query_dicts(
        f"""
        SELECT {ALERT_COLUMNS} FROM alerts FINAL
        WHERE camera_id = {{camera:String}} AND status = 'raised' AND alert_id NOT IN (
            SELECT alert_id FROM alerts WHERE camera_id = {{camera:String}} AND status = 'resolved')
        ORDER BY alerts.raised_at DESC LIMIT 100
        """,
        {"camera": camera_id},
    )
    return CameraDetail(
        **summary.model_dump(),
        active=[Alert(**a) for a in active],
        recent_alerts=query_alerts(store, camera_id=camera_id, limit=20),
    )


class DriftState(BaseModel):
    """The latest verdict of one drift detector on one signal of a camera."""

    detector: str = Field(description="the alert type: data_drift, embedding_drift, prediction_drift...")
    signal: str
    drift: bool = Field(description="drifted now (its last record is a raise)")
    statistic: float
    threshold: float
    window: int
    at: float = Field(description="unix s of the last raise or resolve")
    alert_id: str


@router.get(
    "/api/v1/cameras/{camera_id}/drift",
    response_model=list[DriftState],
    responses={404: {"description": "unknown camera"}},
)
def drift_state(camera_id: CameraPath, store: StoreDep, settings: ApiSettingsDep, now: NowDep) -> list[DriftState]:
    """Every drift detector and signal that has raised on this camera, with its latest state (from the
    ``drift_stats`` table: a row per raise and resolve). Signals never raised are not drifting."""
    _summary(store, camera_id, settings, now)  # 404 for a camera never seen
    rows = store.query_dicts(
        """
        SELECT detector, signal, latest.1 AS drift, latest.2 AS statistic, latest.3 AS threshold,
               latest.4 AS window, latest.5 AS alert_id, toUnixTimestamp64Milli(last) / 1000 AS at
        FROM (
            SELECT detector, signal, max(computed_at) AS last,
                   -- the newest record; at the same instant a resolve wins over a raise
                   argMax((drift, statistic, threshold, window, alert_id), (computed_at, NOT drift)) AS latest
            FROM drift_stats FINAL
            WHERE camera_id = {camera:String} AND alert_id != ''  -- raises and resolves, not the sampled rows
            GROUP BY detector, signal
        )
        ORDER BY drift DESC, detector, signal
        """,
        {"camera": camera_id},
    )
    return [DriftState(**r) for r in rows]


class DriftPoint(BaseModel):
    t: float = Field(description="start of the step, unix s")
    statistic: float = Field(description="the step's last sample")
    min: float = Field(description="the step's smallest sample")
    max: float = Field(description="the step's largest sample")
    threshold: float = Field(description="the threshold at the step's last sample")
    drift: bool = Field(description="held as drifted at any sample of the step")
    samples: int


class DriftSeries(BaseModel):
    detector: str = Field(description="ks_holm, chi_square, z_test, autoencoder, ks, adwin, orb_affine, cbpe")
    signal: str
    drift_when: Literal["below", "above"] = Field(
        description="below: drift lies under the threshold (a p-value, or the expected precision); above: a score "
        "or measure that drifts over it"
    )
    p_value: bool = Field(False, description="the statistic is a p-value (plotted as -log10 p)")
    points: list[DriftPoint]


class DriftHistory(BaseModel):
    camera_id: str
    step_s: int
    since: float = Field(description="unix s")
    until: float = Field(description="unix s")
    series: list[DriftSeries]


@router.get(
    "/api/v1/cameras/{camera_id}/drift/history",
    response_model=DriftHistory,
    responses={400: {"description": "bad range or too many points"}, 404: {"description": "unknown camera"}},
)
def drift_history(
    camera_id: CameraPath,
    store: StoreDep,
    now: NowDep,
    since: Since = None,
    until: Until = None,
    step: Annotated[int, Query(ge=10, le=86_400, description="seconds per point")] = 60,
) -> DriftHistory:
    """Every drift statistic the camera's monitors sampled in the range (``CVOPS_MONITOR_STATS_EVERY_S``), one
    series per detector and signal, with its threshold: the outlier score, the KS p-values of each image
    signal, class-mix and confidence tests, the embedding score test, the error on labelled frames and the
    camera's measured turn. One point per ``step`` that holds samples."""
    start, end = _range(since, until, step, now)
    _known(store, camera_id)
    rows = store.query(
        """
        SELECT detector, signal, intDiv(toUnixTimestamp(computed_at), {step:UInt32}) * {step:UInt32} AS t,
               argMax(statistic, computed_at), min(statistic), max(statistic), argMax(threshold, computed_at),
               max(drift), count()
        FROM drift_stats FINAL
        WHERE camera_id = {camera:String} AND alert_id = ''
          AND computed_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')
          AND computed_at < fromUnixTimestamp64Milli({until:Int64}, 'UTC')
        GROUP BY detector, signal, t ORDER BY detector, signal, t
        """,
        {"camera": camera_id, "step": step, "since": round(start * 1000), "until": round(end * 1000)},
    )
    series: dict[tuple[str, str], DriftSeries] = {}
    for detector, signal, t, last, low, high, threshold, drift, n in rows:
        s = series.get((detector, signal))
        if s is None:
            below = "below" if detector in BELOW_DETECTORS else "above"
            s = series[(detector, signal)] = DriftSeries(detector=detector, signal=signal, drift_when=below,
                                                         p_value=detector in P_VALUE_DETECTORS, points=[])  # fmt: skip
        s.points.append(
            DriftPoint(t=t, statistic=last, min=low, max=high, threshold=threshold, drift=bool(drift), samples=n)
        )
    return DriftHistory(camera_id=camera_id, step_s=step, since=start, until=end, series=list(series.values()))


class ModelPerformance(BaseModel):
    """One model's expected precision on a camera (streams.monitor.performance), beside what labels measured."""

    model_name: str
    model_version: str
    at: float = Field(description="unix s of the last sample")
    expected_precision: float = Field(description="from the detections' scores, calibrated on labelled frames")
    low: float = Field(description="the interval's bottom (95 %)")
    high: float = Field(description="the interval's top (95 %)")
    floor: float = Field(description="the camera's reference less CVOPS_MONITOR_PERFORMANCE_DROP: an alert below")
    dropped: bool = Field(description="held as fallen below the floor (prediction_drift, expected_precision)")
    detections: int = Field(description="detections the estimate is taken over")
    measured_precision: float | None = Field(description="on the recent labelled frames; null without labels")
    expected_on_labelled: float | None = Field(
        description="what the estimate expected of the same labelled detections, before their labels counted"
    )
    measured_f1: float | None = Field(description="F1 on the recent labelled frames (IoU 0.5)")
    labelled_frames: int = Field(description="labelled frames the measured figures are taken over")


@router.get(
    "/api/v1/cameras/{camera_id}/performance",
    response_model=list[ModelPerformance],
    responses={404: {"description": "unknown camera"}},
)
def performance(camera_id: CameraPath, store: StoreDep, now: NowDep, since: Since = None) -> list[ModelPerformance]:
    """Per model that served the camera since ``since`` (default: a day ago), its last sampled expected
    precision with its interval and floor, and the precision and F1 measured on labelled frames where some
    came back (docs/models.md, "Performance without labels"). Newest model first."""
    _known(store, camera_id)
    start = since.timestamp() if since is not None else now - 86_400
    rows = store.query(
        """
        SELECT model_name, model_version, signal, argMax((statistic, threshold, drift, window), computed_at),
               toUnixTimestamp64Milli(max(computed_at)) / 1000
        FROM drift_stats FINAL
        WHERE camera_id = {camera:String} AND detector = 'cbpe' AND alert_id = ''
          AND computed_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')
        GROUP BY model_name, model_version, signal
        """,
        {"camera": camera_id, "since": round(start * 1000)},
    )
    by_model: dict[tuple[str, str], dict] = {}
    for name, version, signal, (statistic, threshold, drift, window), at in rows:
        m = by_model.setdefault((name, version), {"at": 0.0})
        m[signal] = (statistic, threshold, bool(drift), int(window))
        m["at"] = max(m["at"], float(at))
    out = []
    for (name, version), m in by_model.items():
        if "expected_precision" not in m:
            continue
        est, floor, dropped, n = m["expected_precision"]
        measured = m.get("measured_precision")
        f1 = m.get("measured_f1")
        out.append(ModelPerformance(
            model_name=name, model_version=version, at=m["at"], expected_precision=est,
            low=m.get("expected_precision_low", (est,))[0], high=m.get("expected_precision_high", (est,))[0],
            floor=floor, dropped=dropped, detections=n, measured_precision=measured[0] if measured else None,
            expected_on_labelled=measured[1] if measured else None, measured_f1=f1[0] if f1 else None,
            labelled_frames=measured[3] if measured else 0,
        ))  # fmt: skip
    return sorted(out, key=lambda p: -p.at)


class ClassSeries(BaseModel):
    label: str
    total: int = Field(description="detections of this class in the range")
    points: list[tuple[float, int]] = Field(description="(start of the step in unix s, detections) per step with some")


class ClassHistory(BaseModel):
    camera_id: str
    step_s: int
    since: float
    until: float
    classes: list[ClassSeries] = Field(description="the most detected classes first")
    other: int = Field(description="detections of the classes left out by ``top``")


@router.get(
    "/api/v1/cameras/{camera_id}/classes",
    response_model=ClassHistory,
    responses={400: {"description": "bad range or too many points"}, 404: {"description": "unknown camera"}},
)
def class_history(
    camera_id: CameraPath,
    store: StoreDep,
    now: NowDep,
    since: Since = None,
    until: Until = None,
    step: Annotated[int, Query(ge=60, le=86_400, multiple_of=60, description="seconds per point")] = 60,
    top: Annotated[int, Query(ge=1, le=50, description="classes to return, the most detected first")] = 8,
) -> ClassHistory:
    """Detections per class over time, from the ``detections`` table (sorted by camera and class): what the
    model sees, and how that mix changes (prediction drift, as people look at it)."""
    start, end = _range(since, until, step, now)
    _known(store, camera_id)
    rows = store.query(
        """
        SELECT label, intDiv(toUnixTimestamp(captured_at), {step:UInt32}) * {step:UInt32} AS t, count()
        FROM detections FINAL
        WHERE camera_id = {camera:String}
          AND captured_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')
          AND captured_at < fromUnixTimestamp64Milli({until:Int64}, 'UTC')
        GROUP BY label, t ORDER BY label, t
        """,
        {"camera": camera_id, "step": step, "since": round(start * 1000), "until": round(end * 1000)},
    )
    by_label: dict[str, ClassSeries] = {}
    for label, t, n in rows:
        s = by_label.setdefault(label, ClassSeries(label=label, total=0, points=[]))
        s.points.append((float(t), n))
        s.total += n
    ranked = sorted(by_label.values(), key=lambda s: (-s.total, s.label))
    return ClassHistory(
        camera_id=camera_id,
        step_s=step,
        since=start,
        until=end,
        classes=ranked[:top],
        other=sum(s.total for s in ranked[top:]),
    )


@router.get(
    "/api/v1/cameras/{camera_id}/series",
    response_model=Series,
    responses={400: {"description": "unknown signal or too many points"}, 404: {"description": "unknown camera"}},
)
def series(
    request: Request,
    camera_id: CameraPath,
    store: StoreDep,
    now: NowDep,
    signal: Annotated[str, Query(min_length=1, max_length=64, description="e.g. brightness, blur, frames")],
    since: Since = None,
    until: Until = None,
    step: Annotated[int, Query(ge=60, le=86_400, multiple_of=60, description="seconds per point")] = 60,
) -> Series:
    """One signal of one camera from the per-minute aggregates, one point per ``step`` seconds that holds frames.
    Mean signals (brightness, blur, inference_ms) give the mean per frame and the min and max; totals (frames,
    detections, bytes) the sum over the step."""
    signals: dict[str, Signal] = request.app.state.signals
    chosen = signals.get(signal)
    if chosen is None:
        raise HTTPException(status_code=400, detail=f"unknown signal {signal!r}; known: {', '.join(sorted(signals))}")
    start, end = _range(since, until, step, now)
    _known(store, camera_id)
    rows = store.query(
        f"""
        SELECT intDiv(toUnixTimestamp(minute), {{step:UInt32}}) * {{step:UInt32}} AS t, sum(frames) AS n_frames,
               {chosen.value} AS value, {chosen.min} AS low, {chosen.max} AS high
        FROM metrics_minute
        WHERE camera_id = {{camera:String}}
          AND minute >= toStartOfMinute(fromUnixTimestamp64Milli({{since:Int64}}, 'UTC'))
          AND minute < fromUnixTimestamp64Milli({{until:Int64}}, 'UTC')
        GROUP BY t ORDER BY t
        """,
        {"camera": camera_id, "step": step, "since": round(start * 1000), "until": round(end * 1000)},
    )
    points = [Point(t=t, frames=f, value=_number(v), min=_number(lo), max=_number(hi)) for t, f, v, lo, hi in rows]
    return Series(
        camera_id=camera_id, signal=signal, kind=chosen.kind, step_s=step, since=start, until=end, points=points
    )


def _number(value) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _known(store: Store, camera_id: str) -> None:
    if not store.query("SELECT 1 FROM cameras WHERE camera_id = {camera:String} LIMIT 1", {"camera": camera_id}):
        raise HTTPException(status_code=404, detail=f"unknown camera {camera_id!r}")


def _summary(store: Store, camera_id: str, settings, now: float) -> CameraSummary:
    _known(store, camera_id)
    for summary in fleet(store, now, settings.api_offline_after_s, settings.api_warning_after_resolved_s):
        if summary.camera_id == camera_id:
            return summary
    raise HTTPException(status_code=404, detail=f"unknown camera {camera_id!r}")
