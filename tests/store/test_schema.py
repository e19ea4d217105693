"""Migrations: versioned, recorded, idempotent; settings (TTL, dedup window) reconciled at each start."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from core.settings import Settings
from core.topology import topology
from store import Store
from store.schema import migrate, migrations, reconcile
from store.settings import TTL_COLUMNS, StoreSettings
from store.tables import ALERTS, Column, mismatches
from store.tables import TABLES as DECLARED

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


# --- the declared tables (store.tables) are the tables as they stand, to the byte

SCHEMA = Path(__file__).with_name("schema.sql")


def shown(store: Store, names=None) -> dict[str, str]:
    """``SHOW CREATE TABLE`` of every table and view (or of ``names``), without the database's name."""
    if names is None:
        names = [n for (n,) in store.query("SELECT name FROM system.tables WHERE database = currentDatabase()")]
    return {n: store.query(f"SHOW CREATE TABLE {n}")[0][0].replace(f"{store.database}.", "") for n in names}


def expected() -> dict[str, str]:
    """tests/store/schema.sql: the schema the migrations build, as ``SHOW CREATE TABLE`` wrote it before the
    tables were declared in one place."""
    parts = SCHEMA.read_text().split("-- ")[1:]
    return {p.split("\n", 1)[0]: p.split("\n", 1)[1].rstrip("\n") for p in parts}


def test_a_fresh_store_has_the_schema_the_migrations_built(empty_store, store_settings):
    migrate(empty_store, settings=store_settings)  # declared tables first, then the migrations: no-ops on them
    assert shown(empty_store) == expected()


def test_an_existing_store_migrated_step_by_step_has_the_same_schema(empty_store, store_settings):
    """A store from before the declarations: migration 1 applied on its own, the rest by migrate()."""
    empty_store.command(
        "CREATE TABLE schema_migrations (version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT "
        "now64(3)) ENGINE = ReplacingMergeTree ORDER BY version"
    )
    m1 = migrations(30)[0]
    for statement in m1.statements:
        empty_store.command(statement)
    empty_store.insert("schema_migrations", [(1, m1.name)], ["version", "name"])
    assert migrate(empty_store, settings=store_settings) == [m.version for m in migrations(30)][1:]
    assert shown(empty_store) == expected()


@pytest.mark.parametrize("table", DECLARED, ids=lambda t: t.name)
def test_a_declaration_alone_creates_its_table(empty_store, store_settings, table):
    empty_store.command(table.create(store_settings.ttl_for(table.name)))
    reconcile(empty_store, store_settings)  # the dedup window, as every start sets it
    assert shown(empty_store, [table.name]) == {table.name: expected()[table.name]}


@pytest.mark.parametrize("table", DECLARED, ids=lambda t: t.name)
def test_a_declaration_agrees_with_its_topic_and_contract(table):
    assert mismatches(table) == []
    spec = {t.name: t for t in topology(Settings(_env_file=None))}[table.topic]
    assert spec.contract is table.contract


def test_a_column_that_cannot_hold_its_field_is_named():
    wrong = replace(ALERTS, spec=(*ALERTS.spec[:6], Column("value", "UInt32"), Column("extra", "String")))
    assert mismatches(wrong) == [
        "alerts.value: UInt32 cannot hold value: <class 'float'>",
        "alerts.extra: extra is not a field of Alert ('extra')",
    ]
    assert mismatches(replace(ALERTS, spec=(Column("model_name", "Nullable(String)"),))) != []
