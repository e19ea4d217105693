"""Every cookbook query runs on generated data with known answers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from store import Store
from store.cookbook import recipes, run
from store.settings import StoreSettings
from store.writer import StoreWriter
from tests.store.conftest import fresh_database
from tests.store.records import LIMITS, SETTINGS, T0, alert, metrics, prediction, records_of


def ts(unix_s: float) -> datetime:
    return datetime.fromtimestamp(unix_s, tz=UTC)


def utc(value: datetime) -> datetime:
    """Timestamps come back naive (UTC) from chdb and zoned from a server: compare them zoned."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def quantile_exact(values, level: float) -> float:
    """ClickHouse's quantileExact: the element at floor(level * n) of the sorted values."""
    s = sorted(values)
    return s[min(int(level * len(s)), len(s) - 1)]


def fleet():
    """cam-a: 640x360 at 5 frames/s for a minute (model 1), then 20 s an hour later (model 2);
    cam-b: 640x480 at 1 frame/s for a minute with a 31 s silence in the middle (model 1)."""
    frames = []
    for i in range(300):
        frames.append(metrics("cam-a", i, T0 + i * 0.2, inference_ms=float(i % 100 + 1), brightness=100.0 + i % 2 * 10))
    for i in range(100):
        at = T0 + 3600 + i * 0.2
        frames.append(metrics("cam-a", 300 + i, at, model_version="2", inference_ms=200.0 + i,
                              brightness=100.0 + i % 2 * 10))  # fmt: skip
    for j in [*range(20), *range(50, 61)]:
        frames.append(metrics("cam-b", j, T0 + j, height=480, aspect_ratio=640 / 480, inference_ms=10.0,
                              brightness=30.0, blur=5.0))  # fmt: skip
    preds = [prediction("cam-a", i, T0 + i, labels=("person", "car") if i < 10 else ("person",)) for i in range(15)]
    alerts = [
        alert("cam-b", 0, T0 + 10, severity="critical"),
        alert("cam-b", 1, T0 + 20),
        alert("cam-b", 2, T0 + 30, value=4.0),
        alert("cam-b", 2, T0 + 30, value=4.0),  # replayed: one logical alert
        alert("cam-b", 2, T0 + 40, status="resolved", value=1.0),
        alert("cam-a", 0, T0 + 5),
        alert("cam-a", 0, T0 + 65, status="resolved", value=1.5),
        alert("cam-a", 9, T0 - 8 * 86400),  # last week's: outside the window
        alert("cam-b", 7, T0 + 45, type="device_fault", signal="fps", message="no frames"),
    ]
    return frames, preds, alerts


@pytest.fixture(scope="module")
def fleet_store(chdb_dir, chdb_engine) -> Iterator[Store]:
    """The fleet, stored once for the module (the queries only read)."""
    with fresh_database(chdb_dir, StoreSettings(_env_file=None)) as store:
        load(store)
        yield store


def load(store: Store) -> None:
    frames, preds, alerts = fleet()
    w = StoreWriter(SETTINGS, store, LIMITS)
    for topic, items in (("metrics", frames), ("predictions", preds), ("alerts", alerts)):
        for start in range(0, len(items), 100):  # several inserts, as the writer does
            batch = records_of(topic, items[start : start + 100], start=start)
            rows, dead = w.to_rows(batch, now=T0)
            assert not dead
            # distinct tokens per batch: the replayed alert is a second insert, absorbed by ReplacingMergeTree
            assert asyncio.run(w.insert(rows, asyncio.Event(), w.tokens(batch)))


def test_every_recipe_has_a_purpose_and_a_test():
    assert set(recipes()) == set(EXPECTED_RECIPES)
    for recipe in recipes().values():
        assert recipe.purpose and recipe.sql.startswith("-- purpose:")


def test_p99_inference_by_model_version_and_hour(fleet_store):
    frames, _, _ = fleet()
    r = run(fleet_store, "p99_inference_by_model_hour", since=ts(T0), until=ts(T0 + 7200))
    hour0 = [f.inference_ms for f in frames if f.model_version == "1"]
    hour1 = [f.inference_ms for f in frames if f.model_version == "2"]
    assert [(row[1], utc(row[2]), row[3]) for row in r.rows] == [("1", ts(T0), 331), ("2", ts(T0 + 3600), 100)]
    assert [row[4] for row in r.rows] == [quantile_exact(hour0, 0.99), quantile_exact(hour1, 0.99)] == [99.0, 299.0]


def test_cameras_ranked_by_alerts_this_week(fleet_store):
    r = run(fleet_store, "cameras_by_alerts_week", until=ts(T0 + 86400))
    assert [row[:3] for row in r.rows] == [("cam-b", 4, 1), ("cam-a", 1, 0)]
    assert sorted(r.rows[0][3]) == ["data_drift", "device_fault"]


def test_blur_and_brightness_distributions_per_camera(fleet_store):
    r = run(fleet_store, "blur_brightness_distribution", since=ts(T0))
    by_camera = {row[0]: row for row in r.rows}
    a, b = by_camera["cam-a"], by_camera["cam-b"]
    assert a[1] == 400 and b[1] == 31
    assert a[2] == [100.0, 100.0, 110.0, 110.0, 110.0] and a[3] == pytest.approx(105.0)
    assert a[4] == [50.0] * 5 and b[2] == [30.0] * 5 and b[4] == [5.0] * 5


def test_aspect_ratio_histogram_of_the_fleet(fleet_store):
    r = run(fleet_store, "aspect_ratio_histogram")
    assert [(row[0], row[1], row[2], row[3]) for row in r.rows] == [
        (pytest.approx(1.33), 31, 1, ["640x480"]),
        (pytest.approx(1.78), 400, 1, ["640x360"]),
    ]


def test_drift_statistic_timeline_of_one_camera(fleet_store):
    r = run(fleet_store, "drift_timeline", camera="cam-b")
    assert [(utc(row[0]), row[1], row[3], row[4], row[5]) for row in r.rows] == [
        (ts(T0 + 10), "blur", 3.0, 2.0, True),
        (ts(T0 + 20), "blur", 3.0, 2.0, True),
        (ts(T0 + 30), "blur", 4.0, 2.0, True),
        (ts(T0 + 40), "blur", 1.0, 2.0, False),
    ]


def test_frames_per_second_per_camera_with_gaps(fleet_store):
    r = run(fleet_store, "fps_with_gaps", since=ts(T0), gap_s=5.0)
    by_camera = {row[0]: row for row in r.rows}
    a, b = by_camera["cam-a"], by_camera["cam-b"]
    assert (b[1], b[4], b[5], b[6]) == (31, pytest.approx(0.5), 1, pytest.approx(31.0))
    assert (a[1], a[5], a[6]) == (400, 1, pytest.approx(3600 - 59.8))
    assert a[4] == pytest.approx(399 / (3600 + 99 * 0.2))


def test_detections_per_class(fleet_store):
    r = run(fleet_store, "detections_per_class", camera="cam-a", since=ts(T0))
    assert [(row[0], row[1]) for row in r.rows] == [("person", 15), ("car", 10)]
    assert [row[2] for row in r.rows] == [pytest.approx(0.5), pytest.approx(0.6)]
    assert [row[3] for row in r.rows] == [pytest.approx(200.0), pytest.approx(220.0)]


def test_camera_minutes_from_the_aggregate(fleet_store):
    r = run(fleet_store, "camera_minutes", camera="cam-a", since=ts(T0), until=ts(T0 + 7200))
    assert [(utc(row[0]), row[1]) for row in r.rows] == [(ts(T0), 300), (ts(T0 + 3600), 100)]
    first = r.rows[0]
    assert first[2] == pytest.approx(5.0)
    assert first[4] == pytest.approx(105.0) and first[6] == pytest.approx(50.0)
    assert first[7] == pytest.approx(50.5)
    assert 97 <= first[8] <= 100  # t-digest: approximate p99 of 1..100


def test_fleet_latest_status(fleet_store):
    r = run(fleet_store, "fleet_latest")
    latest = {row[0]: dict(zip(r.columns, row, strict=True)) for row in r.rows}
    assert latest["cam-a"]["last_frame_id"] == "cam-a:s:399" and latest["cam-a"]["model_version"] == "2"
    assert latest["cam-a"]["frames"] == 400
    assert utc(latest["cam-b"]["last_seen"]) == ts(T0 + 60)
    assert (latest["cam-b"]["height"], latest["cam-b"]["brightness"]) == (480, 30.0)


def test_alert_fed_tables(fleet_store):
    assert fleet_store.query("SELECT status, signal FROM device_health FINAL") == [("fault", "fps")]
    assert fleet_store.query("SELECT count() FROM edge_cases FINAL WHERE camera_id = 'cam-b'") == [(4,)]


def test_a_recipe_refuses_missing_parameters(fleet_store):
    with pytest.raises(TypeError, match="camera"):
        run(fleet_store, "drift_timeline")


EXPECTED_RECIPES = {
    "p99_inference_by_model_hour", "cameras_by_alerts_week", "blur_brightness_distribution", "aspect_ratio_histogram",
    "drift_timeline", "fps_with_gaps", "detections_per_class", "camera_minutes", "fleet_latest",
}  # fmt: skip
