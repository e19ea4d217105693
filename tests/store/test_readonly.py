"""Analysts' SQL runs read-only and bounded, vetted on the engine's own reading of it: writes, DDL, files,
other databases and several statements are refused cleanly, whatever the spelling."""

from __future__ import annotations

import pytest

from store import connect
from store.readonly import (
    Catalog,
    RefusedQuery,
    SqlLimits,
    function_refusal,
    parse_ast,
    run_readonly,
    vet_ast,
    vet_query_tree,
)
from store.writer import SINKS, metrics_row
from tests.store.records import T0, metrics

ZWSP = "\u200b"


def refusal(store, sql: str, parameters: dict | None = None, limits: SqlLimits | None = None) -> RefusedQuery:
    with pytest.raises(RefusedQuery) as err:
        run_readonly(store, sql, parameters, limits)
    return err.value


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("INSERT INTO frame_metrics (frame_id) VALUES ('x')", "not_a_select"),
        ("DROP TABLE frame_metrics", "not_a_select"),
        ("WITH 1 AS x INSERT INTO frame_metrics SELECT * FROM frame_metrics", "not_a_select"),
        ("/* first */ SHOW TABLES", "not_a_select"),
        ("SELECT 1; DROP TABLE frame_metrics", "multiple_statements"),
        ("SELECT 1;\n;SELECT 2", "multiple_statements"),
        ("SELECT $$;$$; DROP TABLE frame_metrics", "multiple_statements"),
        ("SELECT name FROM system.users", "forbidden_table"),
        ("SELECT query FROM `system`.`query_log`", "forbidden_table"),
        ('SELECT * FROM "system" . "settings"', "forbidden_table"),
        ('SELECT * FROM "sys\\x74em".tables', "forbidden_table"),  # the engine decodes the escape
        (f"SELECT * FROM system{ZWSP}.tables", "forbidden_table"),  # the engine skips U+200B as blank
        ("SELECT * FROM INFORMATION_SCHEMA.TABLES", "forbidden_table"),
        ("SELECT 1 IN system.one", "forbidden_table"),
        ("SELECT * FROM file('/etc/passwd', 'LineAsString')", "forbidden_table"),
        ("SELECT * FROM frame_metrics AS m JOIN url('http://x/', 'CSV') AS u ON 1", "forbidden_table"),
        ("SELECT * FROM other_db.frame_metrics", "forbidden_table"),
        ("SELECT substring(file('/etc/hostname'), 1, 20)", "forbidden_function"),
        (f"SELECT FILE{ZWSP}/* c */('/etc/hostname')", "forbidden_function"),
        ("SELECT `fi\\x6ce`('/etc/hostname')", "forbidden_function"),
        ("SELECT arrayMap(p -> file(p), ['/etc/hostname'])", "forbidden_function"),
        ("SELECT joinGet('t', 'v', 1), dictGet('d', 'a', 1)", "forbidden_function"),
        ("SELECT getServerSetting('path')", "forbidden_function"),
        ("SELECT * APPLY file FROM (SELECT '/etc/hostname' AS p)", "unsupported_syntax"),
        ("SELECT 1 AS `x\\n  Function numbers`", "unreadable"),
        ("SELECT nosuchfunction(1)", "unknown_function"),
        ("SELECT 1 SETTINGS readonly = 0", "forbidden_clause"),
        ("SELECT * FROM (SELECT 1 SETTINGS max_result_rows = 0)", "forbidden_clause"),
        ("SELECT 1 FORMAT JSON", "forbidden_clause"),
        ("SELECT 1 INTO OUTFILE '/tmp/x'", "forbidden_clause"),
        ("  -- nothing\n ; ", "empty"),
        ("SELECT 'unterminated", "engine_syntax_error"),
    ],
)
def test_refused(store, sql, reason):
    assert refusal(store, sql).reason == reason


def test_parameters_are_vetted_as_the_engine_substitutes_them(store):
    assert refusal(store, "SELECT * FROM {t:Identifier}", {"t": "system.users"}).reason == "forbidden_table"
    got = refusal(store, "SELECT * FROM {d:Identifier}.{t:Identifier}", {"d": "default", "t": "x"})
    assert got.reason == "forbidden_table"
    assert run_readonly(store, "SELECT count() AS n FROM {t:Identifier}", {"t": "frame_metrics"}).rows == [(0,)]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT camera_id, count() FROM frame_metrics GROUP BY camera_id;",
        "SELECT 'a; DROP TABLE x' AS s, 'system.tables' AS t, 'file(1)' AS f FROM frame_metrics",
        "WITH t AS (SELECT 1 AS x) SELECT x FROM t -- ; not a second statement",
        "SELECT number FROM numbers(10)",
        "SELECT * FROM frame_metrics /* our own database */",
        "SELECT m.camera_id, countIf(m.blur > 1), quantilesExact(0.5)(m.blur) FROM frame_metrics AS m GROUP BY 1",
        "SELECT 'é' AS `é`, 'mean area (px²)' AS unit",
        "SELECT CASE WHEN 1 THEN 'a' END, arrayMap(x -> x + 1, [1]), toTypeName(1), getSetting('readonly')",
        "SELECT camera_id, row_number() OVER (PARTITION BY camera_id ORDER BY seq) FROM frame_metrics",
    ],
)
def test_single_reads_run(store, sql):
    run_readonly(store, sql)


def test_a_query_as_deep_as_the_engine_parses_is_read(store):
    """The engine parses 490 nested calls (about 1,000 levels of tree); reading its tree does not recurse."""
    assert run_readonly(store, "SELECT " + "abs(" * 490 + "1" + ")" * 490 + " AS x").rows == [(1,)]
    assert refusal(store, "SELECT " + "abs(" * 600 + "1" + ")" * 600).reason == "engine_too_deep_ast"


def test_the_store_s_own_database_may_be_named(store):
    assert run_readonly(store, f"SELECT count() FROM {store.database}.frame_metrics").rows == [(0,)]
    in_own = f"SELECT 'cam-1' IN (SELECT camera_id FROM {store.database}.frame_metrics) AS found"
    assert run_readonly(store, in_own).rows == [(0,)]


def test_another_database_of_the_engine_is_out_of_reach(store, chdb_dir):
    """A database created beside the store's, with a secret row: no spelling reads it."""
    other = connect(f"chdb://{chdb_dir}?database=neighbour")
    try:
        other.command("CREATE TABLE IF NOT EXISTS secrets (s String) ENGINE = MergeTree ORDER BY s")
        other.command("INSERT INTO secrets VALUES ('the-secret')")
        for sql in (
            "SELECT * FROM neighbour.secrets",
            'SELECT * FROM "neighbo\\x75r".secrets',
            "SELECT 1 AS x WHERE 'the-secret' IN neighbour.secrets",
            "SELECT (SELECT s FROM neighbour.secrets) AS s",
            "SELECT throwIf((SELECT count() FROM neighbour.secrets) > 0)",
            "WITH s AS (SELECT * FROM neighbour.secrets) SELECT * FROM s",
        ):
            assert refusal(store, sql).reason == "forbidden_table", sql
    finally:
        other.command("DROP DATABASE IF EXISTS neighbour")
        other.close()


def test_the_engine_alone_reads_any_file_so_the_vetting_is_the_barrier(store, tmp_path, monkeypatch):
    """Why the vetting exists: read-only, chdb still runs scalar file() on any path (its one user holds the
    FILE grant, user_files_path does not confine it). Should that change, this says so."""
    secret = tmp_path / "secret.txt"
    secret.write_text("host-secret")
    assert refusal(store, f"SELECT file('{secret}')").reason == "forbidden_function"
    monkeypatch.setattr("store.readonly.vet_ast", lambda lines, database, catalog: None)
    assert refusal(store, f"SELECT file('{secret}')").reason == "forbidden_function"  # the resolved tree's check
    monkeypatch.setattr("store.readonly.vet_query_tree", lambda lines, database: None)
    assert run_readonly(store, f"SELECT file('{secret}') AS f").rows == [("host-secret",)]


def test_table_functions_are_refused_by_the_engine_too(store, monkeypatch):
    monkeypatch.setattr("store.readonly.vet_ast", lambda lines, database, catalog: None)
    monkeypatch.setattr("store.readonly.vet_query_tree", lambda lines, database: None)
    for sql in ("SELECT * FROM file('/etc/passwd', 'LineAsString')", "SELECT * FROM url('http://127.0.0.1:9/', 'CSV')"):
        assert refusal(store, sql).reason == "engine_readonly"


def test_a_select_returns_columns_and_rows(store):
    store.insert("frame_metrics", [metrics_row(metrics(seq=i, at=T0 + i)) for i in range(3)], SINKS["metrics"].columns)
    result = run_readonly(store, "SELECT camera_id, count() AS frames FROM frame_metrics GROUP BY camera_id")
    assert result.columns == ["camera_id", "frames"]
    assert result.rows == [("cam-1", 3)]
    assert result.types[1] == "UInt64"


def test_limits_are_enforced_by_the_engine(store):
    got = refusal(store, "SELECT number FROM numbers(1000)", limits=SqlLimits(max_rows=10))
    assert got.reason == "engine_too_many_rows_or_bytes"
    got = refusal(store, "SELECT count() FROM numbers(1e12)", limits=SqlLimits(max_execution_s=0.5))
    assert got.reason == "engine_timeout_exceeded"
    got = refusal(store, "SELECT groupArray(number) FROM numbers(1e8)", limits=SqlLimits(max_memory_bytes=16 << 20))
    assert got.reason == "engine_memory_limit_exceeded"


def test_a_result_is_measured_while_it_is_read(store):
    """A constant column is counted once a block by the engine: a trillion rows of 1 kB pass its byte limit.
    Read whole, the query would run out of time; read block by block, it stops at the first one too big."""
    limits = SqlLimits(max_rows=10**13, max_result_bytes=1 << 20, max_execution_s=60)
    got = refusal(store, "SELECT repeat('x', 1000) AS s FROM numbers(1e12)", limits=limits)
    assert got.reason == "result_too_large"
    assert run_readonly(store, "SELECT 1 AS one").rows == [(1,)]


def test_a_refused_query_leaves_the_session_writable(store):
    refusal(store, "SELECT 1; DROP TABLE frame_metrics")
    refusal(store, "SELECT number FROM numbers(100)", limits=SqlLimits(max_rows=1))
    store.insert("frame_metrics", [metrics_row(metrics())], SINKS["metrics"].columns)
    assert store.query("SELECT count() FROM frame_metrics") == [(1,)]
    assert store.query("SELECT value FROM system.settings WHERE name = 'readonly'") == [("0",)]


def test_parameters_are_bound_server_side(store):
    result = run_readonly(store, "SELECT {camera:String} AS c", parameters={"camera": "x'); DROP TABLE y; --"})
    assert result.rows == [("x'); DROP TABLE y; --",)]


# --- the vetting's pure parts, on trees as the engine prints them ----------------------------------------------

CATALOG = Catalog.of(
    [
        ("substring", "", 0, "String"),
        ("file", "", 0, "Other"),
        ("currentDatabase", "", 0, "Other"),
        ("DATABASE", "currentDatabase", 0, ""),
        ("hostName", "", 0, "Other"),
        ("hostname", "hostName", 0, ""),
        ("quantilesExact", "", 1, "Aggregate Functions"),
        ("in", "", 0, "Comparison"),
    ],
    combinators=["If", "State", "Merge"],
    databases=["cvops", "default", "system"],
)


def select(*lines: str) -> list[str]:
    """``SELECT <lines>``'s tree, each line one expression one level under the select list."""
    return [
        "SelectWithUnionQuery (children 2)",
        " ExpressionList (children 1)",
        "  SelectQuery (children 1)",
        f"   ExpressionList (children {sum(1 for line in lines if not line.startswith(' '))})",
        *[f"    {line}" for line in lines],
        " Identifier Native",
    ]


def test_functions_are_looked_up_as_the_engine_does():
    assert function_refusal("Substring", CATALOG) is None
    assert function_refusal("DATABASE", CATALOG) is None  # an alias of a reviewed function
    assert function_refusal("quantilesExactIfState", CATALOG) is None  # combinators
    assert function_refusal("HOSTNAME", CATALOG).reason == "forbidden_function"  # an alias of a refused one
    assert function_refusal("fileIf", CATALOG) is not None  # file is no aggregate: no combinator makes it one
    assert function_refusal("substringIf", CATALOG).reason == "unknown_function"


def test_a_tree_that_does_not_add_up_is_unreadable():
    for lines in (
        # SELECT 1 AS `x\nFunction numbers`: the engine counts one expression, the lines say two
        [*select("Literal UInt64_1 (alias x")[:-1], "    Function numbers)", " Identifier Native"],
        ["SelectWithUnionQuery (children 2)", " ExpressionList"],  # a child missing
        ["SelectWithUnionQuery", " ExpressionList"],  # a child too many
        select(f"Identifier a{ZWSP}b"),
        select("Identifier a\tb"),
        [" ExpressionList"],  # no root
    ):
        with pytest.raises(RefusedQuery) as err:
            parse_ast(lines)
        assert err.value.reason == "unreadable", lines


FILE = ("Function file (children 1)", " ExpressionList (children 1)", "  Literal '/etc/passwd'")
IN_OTHER = ("Function in (children 1)", " ExpressionList (children 2)", "  Literal UInt64_1", "  Identifier default.t")
APPLY = ("Asterisk (children 1)", " ColumnsTransformerList (children 1)", "  ColumnsApplyTransformer")
OUTFILE = ["SelectWithUnionQuery (children 3)", " ExpressionList", " Literal '/tmp/out'", " Identifier Native"]


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        (select(*FILE), "forbidden_function"),
        (select(*IN_OTHER), "forbidden_table"),
        (select("Identifier SYSTEM.tables.name"), "forbidden_table"),
        (select("Literal UInt64_1", "Set"), "forbidden_clause"),
        (select(*APPLY), "unsupported_syntax"),
        (OUTFILE, "forbidden_clause"),
        (["SelectWithUnionQuery (children 2)", " ExpressionList", " Identifier JSON"], "forbidden_clause"),
        (["InsertQuery (children 1)", " Identifier t"], "not_a_select"),
    ],
)
def test_vet_ast_refuses(lines, reason):
    with pytest.raises(RefusedQuery) as err:
        vet_ast(lines, "cvops", CATALOG)
    assert err.value.reason == reason


def test_vet_ast_accepts_the_store_s_own_tables_and_numbers():
    vet_ast(
        select("Identifier cvops.alerts.camera_id", "Identifier m.camera_id", "Literal 'system.tables'"),
        "cvops",
        CATALOG,
    )
    from_numbers = [
        "SelectWithUnionQuery (children 2)",
        " ExpressionList (children 1)",
        "  SelectQuery (children 2)",
        "   ExpressionList (children 1)",
        "    Asterisk",
        "   TablesInSelectQuery (children 1)",
        "    TablesInSelectQueryElement (children 1)",
        "     TableExpression (children 1)",
        "      Function numbers (alias n) (children 1)",
        "       ExpressionList (children 1)",
        "        Literal UInt64_3",
        " Identifier Native",
    ]
    vet_ast(from_numbers, "cvops", CATALOG)
    with pytest.raises(RefusedQuery):
        vet_ast([line.replace("numbers", "zeros") for line in from_numbers], "cvops", CATALOG)


def test_vet_query_tree_reads_what_the_engine_resolved():
    vet_query_tree(
        ["JOIN TREE", "  TABLE id: 3, alias: __table1, table_name: cvops.t", "TABLE id: 7, table_name: system.one"],
        "cvops",
    )
    for line, reason in (
        ("TABLE id: 6, table_name: default.sec", "forbidden_table"),
        ("TABLE id: 6, alias: a, table_name: cvops.x, table_name: system.tables", "forbidden_table"),
        ("TABLE_FUNCTION id: 6, alias: __table3, table_function_name: file", "forbidden_table"),
        ("FUNCTION id: 3, function_name: joinGet, function_type: ordinary", "forbidden_function"),
    ):
        with pytest.raises(RefusedQuery) as err:
            vet_query_tree([line], "cvops")
        assert err.value.reason == reason


# --- the DSN's password -------------------------------------------------------------------------------------


def test_a_dsn_s_password_is_never_in_an_error():
    with pytest.raises(ValueError) as err:
        connect("clickhouse://analyst:pa55-w0rd@127.0.0.1:9000/cvops")
    assert "pa55-w0rd" not in str(err.value)
    assert "analyst:***@127.0.0.1:9000" in str(err.value)
