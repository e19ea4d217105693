"""Migrations: versioned, recorded, idempotent; settings (TTL, dedup window) reconciled at each start."""

from __future__ import annotations

from store import Store
from store.schema import migrate, migrations, reconcile
from store.settings import TTL_COLUMNS, StoreSettings

TABLES = {"frame_metrics", "predictions", "alerts", "dead_letters", "detections", "metrics_minute", "cameras",
          "model_versions", "drift_stats", "device_health", "edge_cases", "schema_migrations",
          "camera_views"}  # fmt: skip


def ddl(store: Store) -> dict[str, str]:
    return dict(store.query("SELECT name, create_table_query FROM system.tables WHERE database = currentDatabase()"))


def test_migrations_apply_in_order_and_a_second_start_changes_nothing(empty_store, store_settings):
    every = [m.version for m in migrations(30)]
    assert migrate(empty_store, settings=store_settings) == every
    before = ddl(empty_store)
    assert set(before) >= TABLES
    assert migrate(empty_store, settings=store_settings) == []
    assert reconcile(empty_store, store_settings) == []
    assert ddl(empty_store) == before
    versions = empty_store.query("SELECT version FROM schema_migrations FINAL ORDER BY version")
    assert versions == [(v,) for v in every]


def test_versions_are_unique_and_increasing():
    versions = [m.version for m in migrations(30)]
    assert versions == sorted(set(versions)) == list(range(1, len(versions) + 1))


def test_ttl_per_table_comes_from_settings_and_changes_only_what_differs(store):
    custom = StoreSettings(_env_file=None, ttl_days=90, ttl_days_frame_metrics=7)
    changed = reconcile(store, custom)
    assert len(changed) == len(TTL_COLUMNS)  # every table moves from 30 to 90 days, frame_metrics to 7
    tables = ddl(store)
    assert "toIntervalDay(7)" in tables["frame_metrics"]
    assert "toIntervalDay(90)" in tables["detections"]
    assert reconcile(store, custom) == []


def test_ttl_env_variables_are_read(monkeypatch):
    monkeypatch.setenv("CVOPS_TTL_DAYS", "14")
    monkeypatch.setenv("CVOPS_TTL_DAYS_ALERTS", "365")
    s = StoreSettings(_env_file=None)
    assert (s.ttl_for("alerts"), s.ttl_for("frame_metrics")) == (365, 14)


def test_every_stream_table_deduplicates_insert_blocks(store):
    for name, query in ddl(store).items():
        if name != "schema_migrations" and not name.endswith("_mv"):
            assert "non_replicated_deduplication_window = 1000" in query, name


def test_migration_2_backfills_what_migration_1_stored(empty_store, store_settings):
    from store.writer import SINKS, metrics_row, prediction_row
    from tests.store.records import T0, metrics, prediction

    m1 = migrations(30)[0]
    empty_store.command(
        "CREATE TABLE schema_migrations (version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT "
        "now64(3)) ENGINE = ReplacingMergeTree ORDER BY version"
    )
    for statement in m1.statements:
        empty_store.command(statement)
    empty_store.insert("schema_migrations", [(1, m1.name)], ["version", "name"])
    v1 = 16  # the columns frame_metrics had in migration 1
    empty_store.insert("frame_metrics", [metrics_row(metrics(seq=i, at=T0 + i))[:v1] for i in range(5)],
                       SINKS["metrics"].columns[:v1])  # fmt: skip
    empty_store.insert("predictions", [prediction_row(prediction(labels=("person", "car", "bus")))],
                       SINKS["predictions"].columns)  # fmt: skip
    assert migrate(empty_store, settings=store_settings) == [m.version for m in migrations(30)][1:]
    assert empty_store.query("SELECT sum(frames) FROM metrics_minute") == [(5,)]
    assert empty_store.query("SELECT label FROM detections ORDER BY det_index") == [("person",), ("car",), ("bus",)]
    assert empty_store.query("SELECT sum(frames) FROM cameras") == [(5,)]
