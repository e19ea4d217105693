"""Analysts' SQL runs read-only and bounded: writes, DDL, secrets and several statements are refused cleanly."""

from __future__ import annotations

import pytest

from store.readonly import RefusedQuery, SqlLimits, run_readonly, vet
from store.writer import SINKS, metrics_row
from tests.store.records import T0, metrics


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("INSERT INTO frame_metrics (frame_id) VALUES ('x')", "not_a_select"),
        ("DROP TABLE frame_metrics", "not_a_select"),
        ("SELECT 1; DROP TABLE frame_metrics", "multiple_statements"),
        ("SELECT 1;\n;SELECT 2", "multiple_statements"),
        ("SELECT name FROM system.users", "forbidden_table"),
        ("SELECT query FROM `system`.`query_log`", "forbidden_table"),
        ('SELECT * FROM "system" . "settings"', "forbidden_table"),
        ("SELECT * FROM INFORMATION_SCHEMA.TABLES", "forbidden_table"),
        ("SELECT * FROM file('/etc/passwd', 'LineAsString')", "forbidden_table"),
        ("SELECT * FROM frame_metrics AS m JOIN url('http://x/', 'CSV') AS u ON 1", "forbidden_table"),
        ("SELECT * FROM other_db.frame_metrics", "forbidden_table"),
        ("SELECT 1 SETTINGS readonly = 0", "forbidden_clause"),
        ("SELECT 1 FORMAT JSON", "forbidden_clause"),
        ("SELECT 1 INTO OUTFILE '/tmp/x'", "forbidden_clause"),
        ("  -- nothing\n ; ", "empty"),
        ("SELECT 'unterminated", "syntax"),
    ],
)
def test_vet_refuses(sql, reason):
    with pytest.raises(RefusedQuery) as err:
        vet(sql, "cvops")
    assert err.value.reason == reason


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT camera_id, count() FROM frame_metrics GROUP BY camera_id;",
        "SELECT 'a; DROP TABLE x' AS s, \"system\" FROM frame_metrics",  # inside quotes: text, not SQL
        "WITH t AS (SELECT 1 AS x) SELECT x FROM t -- ; not a second statement",
        "SELECT number FROM numbers(10)",
        "SELECT * FROM cvops.frame_metrics /* our own database */",
        "SELECT m.camera_id FROM frame_metrics AS m",
    ],
)
def test_vet_accepts_single_reads(sql):
    assert vet(sql, "cvops")


def test_a_select_returns_columns_and_rows(store):
    store.insert("frame_metrics", [metrics_row(metrics(seq=i, at=T0 + i)) for i in range(3)], SINKS["metrics"].columns)
    result = run_readonly(store, "SELECT camera_id, count() AS frames FROM frame_metrics GROUP BY camera_id")
    assert result.columns == ["camera_id", "frames"]
    assert result.rows == [("cam-1", 3)]
    assert result.types[1] == "UInt64"


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO frame_metrics (frame_id) VALUES ('x')",
        "DROP TABLE frame_metrics",
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "SELECT * FROM url('http://127.0.0.1:9/', 'CSV', 'a String')",
    ],
)
def test_the_engine_refuses_writes_even_if_vetting_were_fooled(store, monkeypatch, sql):
    monkeypatch.setattr("store.readonly.vet", lambda sql, database=None: sql)
    with pytest.raises(RefusedQuery) as err:
        run_readonly(store, sql)
    assert err.value.reason == "engine_readonly"
    assert "frame_metrics" in {r[0] for r in store.query("SHOW TABLES")}


def test_limits_are_enforced_by_the_engine(store):
    with pytest.raises(RefusedQuery) as err:
        run_readonly(store, "SELECT number FROM numbers(1000)", limits=SqlLimits(max_rows=10))
    assert err.value.reason == "engine_too_many_rows_or_bytes"
    with pytest.raises(RefusedQuery) as err:
        run_readonly(store, "SELECT count() FROM numbers(1e12)", limits=SqlLimits(max_execution_s=0.5))
    assert err.value.reason == "engine_timeout_exceeded"
    with pytest.raises(RefusedQuery) as err:
        run_readonly(store, "SELECT groupArray(number) FROM numbers(1e8)", limits=SqlLimits(max_memory_bytes=16 << 20))
    assert err.value.reason == "engine_memory_limit_exceeded"


def test_a_refused_query_leaves_the_session_writable(store):
    with pytest.raises(RefusedQuery):
        run_readonly(store, "SELECT 1; DROP TABLE frame_metrics")
    with pytest.raises(RefusedQuery):
        run_readonly(store, "SELECT number FROM numbers(100)", limits=SqlLimits(max_rows=1))
    store.insert("frame_metrics", [metrics_row(metrics())], SINKS["metrics"].columns)
    assert store.query("SELECT count() FROM frame_metrics") == [(1,)]
    assert store.query("SELECT value FROM system.settings WHERE name = 'readonly'") == [("0",)]


def test_parameters_are_bound_server_side(store):
    result = run_readonly(store, "SELECT {camera:String} AS c", parameters={"camera": "x'); DROP TABLE y; --"})
    assert result.rows == [("x'); DROP TABLE y; --",)]
