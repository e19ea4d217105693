"""Cameras: status from the latest frame and the alerts, fps from the per-minute aggregates, series by signal."""

from __future__ import annotations

import pytest

from api.cameras import camera_status, signals_from_columns
from tests.api.conftest import seed
from tests.store.records import alert, metrics


@pytest.mark.parametrize(
    ("age_s", "active", "resolved", "status"),
    [(5, 0, 0, "ok"), (5, 0, 1, "warning"), (5, 1, 1, "alert"), (61, 1, 0, "offline"), (61, 0, 0, "offline")],
)
def test_status_offline_wins_then_alert_then_warning(age_s, active, resolved, status):
    assert camera_status(1000.0 - age_s, 1000.0, active, resolved, offline_after_s=60) == status


def test_series_signals_come_from_the_minute_columns():
    columns = {
        "frames": "SimpleAggregateFunction(sum, UInt64)",
        "brightness_sum": "SimpleAggregateFunction(sum, Float64)",
        "brightness_min": "SimpleAggregateFunction(min, Float32)",
        "brightness_max": "SimpleAggregateFunction(max, Float32)",
        "inference_ms_q": "AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float32)",
        "first_at": "SimpleAggregateFunction(min, DateTime64(3, 'UTC'))",
        "bad name; DROP": "SimpleAggregateFunction(sum, UInt64)",
    }
    signals = signals_from_columns(columns)
    assert sorted(signals) == ["brightness", "frames"]
    assert signals["brightness"].kind == "mean"
    assert signals["brightness"].max == "max(brightness_max)"
    assert signals["frames"].kind == "total"


@pytest.mark.integration
def test_the_live_schema_gives_the_expected_signals(app):
    assert {"brightness", "blur", "inference_ms", "frames", "detections", "bytes"} <= set(app.state.signals)


@pytest.mark.integration
def test_fleet_status_fps_and_last_frame(client, store, now, camera):
    ok, warn, alarm, gone = (f"{camera}-{s}" for s in ("ok", "warn", "alarm", "gone"))
    frames = [metrics(ok, i, now - 20 + i, brightness=90.0 + i) for i in range(10)]
    frames += [metrics(c, 0, now - 5) for c in (warn, alarm)]
    frames += [metrics(gone, 0, now - 3600)]
    seed(
        store,
        frames,
        [
            alert(warn, 0, now - 120),
            alert(warn, 0, now - 60, status="resolved"),
            alert(alarm, 0, now - 30),
            alert(alarm, 1, now - 3000),
            alert(alarm, 1, now - 2900, status="resolved"),  # long resolved: no warning of its own
            alert(gone, 0, now - 3600),
        ],
    )
    r = client.get("/api/v1/cameras")
    assert r.status_code == 200, r.text
    fleet = {c["camera_id"]: c for c in r.json() if c["camera_id"].startswith(camera)}
    assert {c: v["status"] for c, v in fleet.items()} == {ok: "ok", warn: "warning", alarm: "alert", gone: "offline"}
    assert fleet[ok]["frames"] == 10
    assert fleet[ok]["last_frame_at"] == pytest.approx(now - 11)
    assert fleet[ok]["last_frame"]["brightness"] == pytest.approx(99.0)
    assert fleet[ok]["last_frame"]["frame_id"] == f"{ok}:s:9"
    # Frames since the start of the previous minute (90 s before the frozen clock).
    assert fleet[ok]["fps"] == pytest.approx(10 / 90, abs=1e-3)
    assert fleet[gone]["fps"] == 0
    assert fleet[alarm]["active_alerts"] == 1
    assert fleet[warn]["recently_resolved_alerts"] == 1


@pytest.mark.integration
def test_a_symptom_is_not_an_active_alert_of_its_camera(client, store, now, camera):
    """A suppressed alert (a symptom of its camera's cause, docs/alerts.md) is stored but neither counts as
    active nor turns the camera's status to alert; the same id raised later on its own does."""
    quiet, loud = f"{camera}-quiet", f"{camera}-loud"
    seed(
        store,
        [metrics(c, 0, now - 5) for c in (quiet, loud)],
        [
            alert(quiet, 0, now - 30, status="suppressed", caused_by=f"{quiet}-cause"),
            alert(loud, 0, now - 30, status="suppressed", caused_by=f"{loud}-cause"),
            alert(loud, 0, now - 10),
        ],
    )
    fleet = {c["camera_id"]: c for c in client.get("/api/v1/cameras").json() if c["camera_id"].startswith(camera)}
    assert (fleet[quiet]["status"], fleet[quiet]["active_alerts"]) == ("ok", 0)
    assert (fleet[loud]["status"], fleet[loud]["active_alerts"]) == ("alert", 1)
    assert client.get(f"/api/v1/cameras/{quiet}").json()["active"] == []


@pytest.mark.integration
def test_camera_detail_lists_active_alerts(client, store, now, camera):
    seed(
        store,
        [metrics(camera, 0, now - 5)],
        [alert(camera, 0, now - 30), alert(camera, 1, now - 20), alert(camera, 1, now - 10, status="resolved")],
    )
    r = client.get(f"/api/v1/cameras/{camera}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "alert"
    assert [a["alert_id"] for a in body["active"]] == [f"{camera}-a0"]
    assert [(a["alert_id"], a["status"]) for a in body["recent_alerts"]] == [
        (f"{camera}-a1", "resolved"),
        (f"{camera}-a1", "raised"),
        (f"{camera}-a0", "raised"),
    ]


@pytest.mark.integration
def test_unknown_camera_is_404_json(client):
    for path in ("/api/v1/cameras/nope", "/api/v1/cameras/nope/series?signal=blur"):
        r = client.get(path)
        assert r.status_code == 404
        assert r.json() == {"detail": "unknown camera 'nope'"}


@pytest.mark.integration
def test_series_of_a_mean_and_a_total_by_step(client, store, now, camera):
    start = now // 3600 * 3600 - 3600  # the start of the previous hour: steps of 120 s align on it
    seed(store, [metrics(camera, i, start + i * 20, brightness=float(i)) for i in range(30)])  # 3 a minute
    params = {"since": start, "until": start + 600}
    r = client.get(f"/api/v1/cameras/{camera}/series", params={**params, "signal": "brightness", "step": 120})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["kind"] == "mean" and body["step_s"] == 120
    first = body["points"][0]
    assert first["frames"] == 6
    assert first["value"] == pytest.approx(sum(range(6)) / 6)
    assert (first["min"], first["max"]) == (0.0, 5.0)
    assert [p["t"] for p in body["points"]] == [start + 120 * k for k in range(5)]

    r = client.get(f"/api/v1/cameras/{camera}/series", params={**params, "signal": "frames"})
    assert [p["value"] for p in r.json()["points"]] == [3.0] * 10
    assert r.json()["kind"] == "total"


@pytest.mark.integration
@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"signal": "brightness; DROP TABLE cameras"}, 400),
        ({"signal": "brightness_sum"}, 400),
        ({}, 422),
        ({"signal": "blur", "step": 90}, 422),
        ({"signal": "blur", "step": "x"}, 422),
        ({"signal": "blur", "since": "yesterday"}, 422),
        ({"signal": "blur", "since": "nan"}, 422),
        ({"signal": "blur", "since": "-1"}, 422),
        ({"signal": "blur", "since": 2000, "until": 1000}, 400),
        ({"signal": "blur", "since": 0, "until": 1_700_000_000}, 400),  # too many points
    ],
)
def test_series_refuses_bad_input_with_a_message(client, store, now, camera, params, status):
    seed(store, [metrics(camera, 0, now - 5)])
    r = client.get(f"/api/v1/cameras/{camera}/series", params=params)
    assert r.status_code == status, r.text
    assert r.json()["detail"]
    if (status == 400 and "signal" in str(params.get("signal", ""))) or params.get("signal", "").startswith("bright"):
        assert "known: " in r.json()["detail"]


def test_drift_state_per_detector_and_signal(client, store, now, camera):
    seed(
        store,
        [metrics(camera, 0, now - 5)],
        [
            alert(camera, 0, now - 40, type="data_drift", signal="blur_distribution", value=1e-5, threshold=1e-3),
            alert(camera, 0, now - 20, type="data_drift", signal="blur_distribution", status="resolved", value=0.2),
            alert(camera, 1, now - 10, type="embedding_drift", signal="embedding_score", value=2e-4, threshold=1e-3),
            alert(camera, 2, now - 10, type="device_fault", signal="frozen"),  # a fault, not drift
        ],
    )
    r = client.get(f"/api/v1/cameras/{camera}/drift")
    assert r.status_code == 200, r.text
    assert [(d["detector"], d["signal"], d["drift"]) for d in r.json()] == [
        ("embedding_drift", "embedding_score", True),
        ("data_drift", "blur_distribution", False),
    ]
    assert client.get("/api/v1/cameras/no-such-camera-here/drift").status_code == 404


def test_drift_history_gives_each_sampled_statistic_with_its_threshold_by_step(client, store, now, camera):
    from core.contracts import DriftStatistic

    def sampled(p: float, score: float) -> list[DriftStatistic]:
        return [
            DriftStatistic(detector="ks_holm", signal="blur_distribution", statistic=p, threshold=1e-4,
                           drift=p < 1e-4, window=100),
            DriftStatistic(detector="autoencoder", signal="embedding_outlier", statistic=score, threshold=2.0,
                           drift=False, window=3),
        ]  # fmt: skip

    start = now - 30 - 120  # the start of the minute two minutes ago
    seed(
        store,
        [
            metrics(camera, 0, start + 5, drift=sampled(0.3, 1.0)),
            metrics(camera, 1, start + 15, drift=sampled(1e-6, 4.0)),  # same minute: min, max, last, drift
            metrics(camera, 2, start + 25, outlier_score=0.5),  # no sample on this frame
            metrics(camera, 3, start + 65, drift=sampled(0.2, 0.5)),
        ],
        # an alert's row in drift_stats is not a sample
        [alert(camera, 0, start + 15, type="data_drift", signal="blur_distribution", value=1e-6, threshold=1e-4)],
    )
    r = client.get(f"/api/v1/cameras/{camera}/drift/history", params={"since": start, "until": now, "step": 60})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["step_s"] == 60
    by_key = {(s["detector"], s["signal"]): s for s in body["series"]}
    assert set(by_key) == {("ks_holm", "blur_distribution"), ("autoencoder", "embedding_outlier")}
    ks, ae = by_key[("ks_holm", "blur_distribution")], by_key[("autoencoder", "embedding_outlier")]
    assert (ks["drift_when"], ae["drift_when"]) == ("below", "above")

    def points(series: dict) -> list[tuple]:
        keys = ("statistic", "min", "max", "threshold", "drift", "samples")
        return [(p["t"] - start, *(p[k] for k in keys)) for p in series["points"]]

    assert points(ks) == [(0, 1e-6, 1e-6, 0.3, 1e-4, True, 2), (60, 0.2, 0.2, 0.2, 1e-4, False, 1)]
    assert points(ae) == [(0, 4.0, 1.0, 4.0, 2.0, False, 2), (60, 0.5, 0.5, 0.5, 2.0, False, 1)]
    # the drift state still reads the alerts only
    state = client.get(f"/api/v1/cameras/{camera}/drift").json()
    assert [(d["detector"], d["signal"]) for d in state] == [("data_drift", "blur_distribution")]


@pytest.mark.parametrize(
    ("params", "status"),
    [({"step": 5}, 422), ({"since": 2000, "until": 1000}, 400), ({"since": 0, "until": 1e6, "step": 10}, 400)],
)
def test_drift_history_refuses_bad_input_with_a_message(client, store, now, camera, params, status):
    seed(store, [metrics(camera, 0, now - 5)])
    r = client.get(f"/api/v1/cameras/{camera}/drift/history", params=params)
    assert r.status_code == status, r.text
    assert r.json()["detail"]
    assert client.get("/api/v1/cameras/no-such-camera-here/drift/history").status_code == 404


def test_detections_per_class_by_step_most_detected_first(client, store, now, camera):
    from store.writer import SINKS, prediction_row
    from tests.store.records import prediction

    start = now - 30 - 120
    preds = [
        prediction(camera, 0, start + 5, labels=("person", "car", "car")),
        prediction(camera, 1, start + 20, labels=("car",)),
        prediction(camera, 2, start + 70, labels=("person", "bus")),
    ]
    seed(store, [metrics(camera, i, p.captured_at) for i, p in enumerate(preds)])
    store.insert("predictions", [prediction_row(p) for p in preds], SINKS["predictions"].columns)
    r = client.get(f"/api/v1/cameras/{camera}/classes", params={"since": start, "until": now, "top": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(c["label"], c["total"], [(t - start, n) for t, n in c["points"]]) for c in body["classes"]] == [
        ("car", 3, [(0, 3)]),
        ("person", 2, [(0, 1), (60, 1)]),
    ]
    assert body["other"] == 1  # the bus, beyond the top 2
    assert client.get(f"/api/v1/cameras/{camera}/classes", params={"step": 90}).status_code == 422
    assert client.get("/api/v1/cameras/no-such-camera-here/classes").status_code == 404


def test_performance_gives_each_models_expected_precision_beside_the_measured_one(client, store, now, camera):
    from core.contracts import DriftStatistic

    def sampled(est: float, measured: float | None = None) -> list[DriftStatistic]:
        def one(signal: str, value: float, threshold: float, window: int = 120) -> DriftStatistic:
            return DriftStatistic(detector="cbpe", signal=signal, statistic=value, threshold=threshold,
                                  drift=est < 0.2, window=window)  # fmt: skip

        out = [one("expected_precision", est, 0.2), one("expected_precision_low", est - 0.05, 0.2),
               one("expected_precision_high", est + 0.05, 0.2)]  # fmt: skip
        if measured is not None:
            out += [one("measured_precision", measured, 0.31, 40), one("measured_f1", 0.4, 0.0, 40)]
        return out

    seed(
        store,
        [
            metrics(camera, 0, now - 300, drift=sampled(0.35, 0.3)),
            metrics(camera, 1, now - 200, drift=sampled(0.33, 0.32)),  # the newest sample of nanodet-m
            metrics(camera, 2, now - 100, model_name="yolov4-tiny", drift=sampled(0.15)),  # no labels yet
        ],
    )
    r = client.get(f"/api/v1/cameras/{camera}/performance")
    assert r.status_code == 200, r.text
    yolo, nano = r.json()
    assert (yolo["model_name"], yolo["dropped"], yolo["measured_precision"], yolo["labelled_frames"]) == (
        "yolov4-tiny", True, None, 0,
    )  # fmt: skip
    assert nano["model_name"] == "nanodet-m" and not nano["dropped"]
    assert nano["expected_precision"] == pytest.approx(0.33) and nano["low"] == pytest.approx(0.28)
    assert (nano["floor"], nano["detections"]) == (pytest.approx(0.2), 120)
    assert (nano["measured_precision"], nano["expected_on_labelled"], nano["measured_f1"]) == (
        pytest.approx(0.32), pytest.approx(0.31), pytest.approx(0.4),
    )  # fmt: skip
    assert nano["labelled_frames"] == 40
    history = client.get(f"/api/v1/cameras/{camera}/drift/history", params={"since": now - 400, "until": now})
    cbpe = [s for s in history.json()["series"] if s["signal"] == "expected_precision"]
    assert [(s["drift_when"], s["p_value"]) for s in cbpe] == [("below", False)]
    assert client.get("/api/v1/cameras/no-such-camera-here/performance").status_code == 404
