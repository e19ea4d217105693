"""The API under malformed and hostile requests, on the real app, broker and embedded ClickHouse engine.

Whatever is sent, the answer is a 4xx with a JSON message that leaks nothing (no stack trace, no file path,
no engine internals beyond a short reason, no secret), and the store is left as it was: every table of every
database, its definition and its rows (``unchanged``). A table of secrets in another database of the same
engine (``seeded``) stands for what an analyst must not reach.
"""

from __future__ import annotations

import http.client
import json
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from api.sql import MAX_BODY_BYTES
from api.tokens import hash_token
from store import Store
from store.readonly import TABLE_FUNCTIONS
from store.settings import StoreSettings
from tests.api.conftest import TOKEN, auth, seed
from tests.store.records import alert, metrics

pytestmark = pytest.mark.integration

REPO = str(Path(__file__).resolve().parents[2])
SECRET = f"secret-{uuid.uuid4().hex}"
PASSWD = "root:x:0:0"
LEAKS = ("Traceback", 'File "', "DB::", "Code: ", "site-packages", "In scope", "SETTINGS max_", "(version ")


def assert_clean_refusal(r, *statuses: int) -> None:
    """A refusal with one of ``statuses``, as JSON with a message, that leaks nothing."""
    assert r.status_code in statuses, r.text[:500]
    assert r.headers["content-type"].startswith("application/json"), r.headers["content-type"]
    assert r.json()["detail"]
    for leak in (*LEAKS, REPO, SECRET, PASSWD):
        assert leak not in r.text, f"{leak!r} in {r.text[:500]}"


def snapshot(store: Store) -> dict:
    """Every table of every database but the engine's own: definition and rows (FINAL: merges change nothing)."""
    out = {}
    for db, name, engine, ddl in store.query(
        "SELECT database, name, engine, create_table_query FROM system.tables "
        "WHERE database NOT IN ('system', 'information_schema', 'INFORMATION_SCHEMA') ORDER BY database, name"
    ):
        rows = None
        if engine.endswith("MergeTree"):
            final = "" if engine == "MergeTree" else " FINAL"
            rows = store.query(f"SELECT count() FROM `{db}`.`{name}`{final}")[0][0]
        out[f"{db}.{name}"] = (engine, ddl, rows)
    return out


@pytest.fixture(scope="module")
def seeded(app) -> str:
    """A camera with frames and alerts, and a table of secrets in another database of the same engine."""
    store: Store = app.state.store
    camera = f"cam-{uuid.uuid4().hex[:8]}"
    at = time.time() - 60
    seed(store, [metrics(camera, i, at + i) for i in range(5)], [alert(camera, 0, at), alert(camera, 1, at + 1)])
    store.command("CREATE TABLE IF NOT EXISTS default.hostile_secrets (s String) ENGINE = MergeTree ORDER BY s")
    store.command("INSERT INTO default.hostile_secrets VALUES ({s:String})", {"s": SECRET})
    return camera


@pytest.fixture
def unchanged(store, seeded):
    """Asserts, after the test, that no table, definition or row count changed and the store stays writable."""
    before = snapshot(store)
    yield seeded
    assert snapshot(store) == before
    assert store.query("SELECT value FROM system.settings WHERE name = 'readonly'") == [("0",)]


def run_sql(client, sql: str, parameters: dict | None = None, headers: dict | None = None):
    body = {"sql": sql, **({"parameters": parameters} if parameters else {})}
    return client.post("/api/v1/sql", json=body, headers=auth() if headers is None else headers)


def assert_still_answers(client) -> None:
    r = run_sql(client, "SELECT 1 AS one")
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == [[1]]


# --- injection through every filter of the list endpoints ----------------------------------------------------

INJECTIONS = [
    "cam' OR 1=1 --",
    "'; DROP TABLE frame_metrics; --",
    "x') UNION ALL SELECT name, 1 FROM system.users --",
    "\\'; TRUNCATE TABLE alerts; --",
    "1; DELETE FROM alerts WHERE 1",
    "{camera:String}",
    "0 OR 1=1",
    "99999999999999999999999999",
    "caméra-東京-📷",
    "\u202e\u0000\u2028",
    "x" * 10_000,
]


@pytest.mark.parametrize("value", INJECTIONS, ids=range(len(INJECTIONS)))
@pytest.mark.parametrize("param", ["camera_id", "type", "status", "since", "until", "limit", "offset", "sort"])
def test_alert_filters_take_injections_as_values(client, unchanged, param, value):
    reference = client.get("/api/v1/alerts", params={"limit": 1000})
    r = client.get("/api/v1/alerts", params={param: value, "limit": 1000} if param != "limit" else {param: value})
    if param == "camera_id" and len(value) <= 200:
        assert r.status_code == 200, r.text
        assert r.json() == []  # compared as a value: no camera has that id, and OR 1=1 did not widen it
    elif param == "sort":  # not a parameter of this route: ignored, the answer is the plain one
        assert r.status_code == 200, r.text
        assert r.json() == reference.json()
    else:
        assert_clean_refusal(r, 422)


@pytest.mark.parametrize("value", INJECTIONS, ids=range(len(INJECTIONS)))
@pytest.mark.parametrize("param", ["signal", "since", "until", "step"])
def test_series_parameters_take_injections_as_values(client, unchanged, param, value):
    params = {"signal": "blur", param: value}
    r = client.get(f"/api/v1/cameras/{unchanged}/series", params=params)
    if param == "signal":
        assert_clean_refusal(r, 400, 422)  # 400: not a known signal; 422: longer than a signal name
    else:
        assert_clean_refusal(r, 422)


@pytest.mark.parametrize("value", INJECTIONS, ids=range(len(INJECTIONS)))
def test_camera_ids_in_paths_take_injections_as_values(client, unchanged, value):
    for suffix in ("", "/series?signal=blur"):
        r = client.get(f"/api/v1/cameras/{quote(value, safe='')}{suffix}")
        assert_clean_refusal(r, 404, 422)
    assert client.get(f"/api/v1/cameras/{unchanged}").status_code == 200


def test_a_live_stream_refuses_a_camera_id_too_long_before_streaming(client):
    assert_clean_refusal(client.get("/api/v1/alerts/stream", params={"camera_id": "x" * 201}), 422)


# --- the read-only SQL endpoint ---------------------------------------------------------------------------------

WRITES = [
    "INSERT INTO frame_metrics (frame_id, camera_id) VALUES ('x', 'y')",
    "INSERT INTO alerts SELECT * FROM alerts",
    "ALTER TABLE frame_metrics DELETE WHERE 1",
    "ALTER TABLE alerts ADD COLUMN pwned UInt8",
    "DROP TABLE frame_metrics",
    "DROP DATABASE default",
    "CREATE TABLE pwned (x UInt8) ENGINE = Memory",
    "CREATE DATABASE pwned",
    "TRUNCATE TABLE alerts",
    "OPTIMIZE TABLE frame_metrics FINAL",
    "SYSTEM DROP MARK CACHE",
    "SYSTEM SHUTDOWN",
    "KILL QUERY WHERE 1",
    "SET readonly = 0",
    "RENAME TABLE alerts TO alerts_gone",
    "EXCHANGE TABLES alerts AND frame_metrics",
    "DETACH TABLE alerts",
    "DELETE FROM alerts WHERE 1",
    "UPDATE alerts SET message = 'x' WHERE 1",
    "GRANT ALL ON *.* TO default",
    "BACKUP TABLE alerts TO File('alerts.zip')",
    "SHOW TABLES",
    "EXPLAIN SELECT 1",
    "USE system",
    "/* a comment first */ DROP TABLE frame_metrics",
    "-- a comment first\nTRUNCATE TABLE alerts",
    "  drop table frame_metrics",
]


@pytest.mark.parametrize("sql", WRITES)
def test_writes_ddl_and_commands_are_refused(client, unchanged, sql):
    r = run_sql(client, sql)
    assert_clean_refusal(r, 400)
    assert r.json()["detail"]["reason"] == "not_a_select"


def test_a_write_behind_a_with_clause_is_refused(client, unchanged):
    r = run_sql(client, "WITH 1 AS x INSERT INTO alerts SELECT * FROM alerts")
    assert_clean_refusal(r, 400)
    assert r.json()["detail"]["reason"] == "not_a_select"  # the engine reads it as INSERT … WITH … SELECT


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1; DROP TABLE frame_metrics",
        "SELECT 1;DROP TABLE alerts;",
        "SELECT ';'; TRUNCATE TABLE alerts",
        "SELECT $$;$$; TRUNCATE TABLE alerts",
        "SELECT 1 -- ;\n; DROP TABLE alerts",
        "SELECT 1\n;\nSELECT 2",
    ],
)
def test_several_statements_are_refused(client, unchanged, sql):
    r = run_sql(client, sql)
    assert_clean_refusal(r, 400)
    assert r.json()["detail"]["reason"] == "multiple_statements"


ESCAPES = [
    # the server's set-up, other people's queries, settings
    ("SELECT name FROM system.users", None),
    ("SELECT name, value FROM system.settings WHERE changed", None),
    ("SELECT query FROM `system`.`query_log`", None),
    ("SELECT * FROM INFORMATION_SCHEMA.TABLES", None),
    ("SELECT $$'$$, name FROM system.tables -- '", None),  # a heredoc hides a quote from a naive reader
    ("SELECT * FROM {t:Identifier}", {"t": "system.users"}),
    ("SELECT * FROM {d:Identifier}.{t:Identifier}", {"d": "system", "t": "tables"}),
    ("SELECT * FROM view(SELECT name FROM system.users)", None),
    # the filesystem, the network, other processes, this process
    ("SELECT file('/etc/passwd') AS f", None),
    ("SELECT * FROM file('/etc/passwd', 'LineAsString')", None),
    ("SELECT * FROM numbers(1) AS a, file('/etc/passwd', 'LineAsString') AS b", None),
    ("SELECT * FROM url('http://127.0.0.1:9/', 'CSV', 'a String')", None),
    ("SELECT * FROM numbers(1) AS a, s3('http://127.0.0.1:9/bucket/key', 'CSV') AS b", None),
    ("SELECT * FROM remote('127.0.0.1', system.one)", None),
    ("SELECT * FROM executable('id', 'TSV', 'x String')", None),
    ("SELECT * FROM input('x String')", None),
    ("SELECT * FROM numbers(1) AS a, python('store') AS b", None),
    ("SELECT * FROM numbers(1) AS a, postgresql('127.0.0.1:9', 'd', 't', 'u', 'p') AS b", None),
    # another database of the same engine
    ("SELECT * FROM default.hostile_secrets", None),
    ("SELECT * FROM numbers(1) AS a, default.hostile_secrets AS b", None),
    ("SELECT 1 AS x WHERE 'probe' IN default.hostile_secrets", None),
    ("SELECT * FROM numbers(1) AS a, merge('default', 'hostile') AS b", None),
    ("SELECT * FROM numbers(1) AS a, mergeTreeIndex('default', 'hostile_secrets') AS b", None),
    ("SELECT * FROM {d:Identifier}.{t:Identifier}", {"d": "default", "t": "hostile_secrets"}),
    # the limits are the service's
    ("SELECT 1 SETTINGS readonly = 0", None),
    ("SELECT count() FROM numbers(1000000000000) SETTINGS max_execution_time = 100000", None),
    ("SELECT * FROM (SELECT 1 SETTINGS max_result_rows = 0)", None),
    ("SELECT 1 FORMAT JSON", None),
]


@pytest.mark.parametrize(("sql", "parameters"), ESCAPES)
def test_secrets_files_and_settings_are_out_of_reach(client, unchanged, sql, parameters):
    r = run_sql(client, sql, parameters)
    assert_clean_refusal(r, 400)
    assert r.json()["detail"]["reason"] in {"forbidden_table", "forbidden_clause", "forbidden_function"}


def test_into_outfile_writes_no_file(client, unchanged, tmp_path):
    target = tmp_path / "out.tsv"
    r = run_sql(client, f"SELECT * FROM frame_metrics INTO OUTFILE '{target}'")
    assert_clean_refusal(r, 400)
    assert r.json()["detail"]["reason"] == "forbidden_clause"
    assert not target.exists()


def test_parameters_are_values_and_cannot_change_settings(client, unchanged):
    hostile = "x'); DROP TABLE alerts; --"
    r = run_sql(
        client,
        "SELECT {p:String} AS p, getSetting('readonly') AS ro, getSetting('max_result_rows') AS max_rows",
        {"p": hostile, "readonly": 0, "max_result_rows": 10**9},
    )
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == [[hostile, 1, StoreSettings().store_sql_max_rows]]


def test_every_table_function_of_the_engine_is_known_to_the_vetting(store):
    """A newer engine with a table function the vetting does not list would let it through: this notices."""
    live = {name.lower() for (name,) in store.query("SELECT name FROM system.table_functions")}
    assert live <= TABLE_FUNCTIONS


@pytest.fixture
def tight_limits(monkeypatch):
    """Server-side limits small enough to reach quickly (the route reads them at each request)."""
    monkeypatch.setenv("CVOPS_STORE_SQL_MAX_EXECUTION_S", "1")
    monkeypatch.setenv("CVOPS_STORE_SQL_MAX_MEMORY_BYTES", str(64 << 20))


@pytest.mark.parametrize(
    ("sql", "reasons"),
    [
        ("SELECT count() FROM numbers(1000000000000)", {"engine_timeout_exceeded"}),
        ("SELECT count() FROM numbers(100000) AS a CROSS JOIN numbers(100000) AS b", {"engine_timeout_exceeded"}),
        ("SELECT sleep(3)", {"engine_timeout_exceeded"}),
        ("SELECT sleepEachRow(1) FROM numbers(100)", {"engine_too_slow"}),
        ("SELECT groupArray(number) FROM numbers(1000000000)", {"engine_memory_limit_exceeded"}),
        (
            "SELECT count() FROM (SELECT arrayJoin(range(100000)) AS a, arrayJoin(range(100001)) AS b, "
            "arrayJoin(range(100002)) AS c)",
            {"engine_timeout_exceeded", "engine_memory_limit_exceeded"},
        ),
        (
            "WITH RECURSIVE t AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM t) SELECT count() FROM t",
            {"engine_too_deep_recursion", "engine_timeout_exceeded", "engine_memory_limit_exceeded"},
        ),
    ],
)
def test_resource_exhaustion_is_stopped_by_the_server_side_limits(client, unchanged, tight_limits, sql, reasons):
    r = run_sql(client, sql)
    assert_clean_refusal(r, 400)
    assert r.json()["detail"]["reason"] in reasons
    assert_still_answers(client)


@pytest.mark.parametrize(
    ("sql", "reasons"),
    [
        ("SELECT number FROM numbers(20000)", {"engine_too_many_rows_or_bytes"}),
        ("SELECT materialize(repeat('x', 10000)) FROM numbers(9000)", {"engine_too_many_rows_or_bytes"}),
        # a constant column is counted once per block by the engine: 100 MB measured by the service
        ("SELECT repeat('x', 1000000) FROM numbers(100)", {"result_too_large"}),
        ("SELECT repeat('x', 1000000) FROM numbers(5000)", {"engine_memory_limit_exceeded", "result_too_large"}),
    ],
)
def test_results_are_bounded_in_rows_and_bytes(client, unchanged, sql, reasons):
    r = run_sql(client, sql)
    assert_clean_refusal(r, 400)
    assert r.json()["detail"]["reason"] in reasons
    assert len(r.content) < 10_000
    assert_still_answers(client)


def test_engine_errors_are_short_and_internal_free(client, unchanged):
    for sql in ("SELECT nonsense(", "SELECT no_such_column FROM frame_metrics", "SELECT throwIf(1, 'boom')"):
        r = run_sql(client, sql)
        assert_clean_refusal(r, 400)
        assert r.json()["detail"]["reason"].startswith("engine_")
        assert len(r.json()["detail"]["detail"]) <= 300


# --- path traversal -----------------------------------------------------------------------------------------------


def raw_get(port: int, path: str) -> tuple[int, str, bytes]:
    """GET ``path`` exactly as written (an HTTP client would resolve the dot segments first)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.getheader("content-type", ""), response.read()
    finally:
        conn.close()


TRAVERSALS = [
    "/api/v1/cameras/..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/v1/cameras/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/api/v1/cameras/..%252F..%252Fetc%252Fpasswd",
    "/api/v1/cameras/..%5C..%5Cetc%5Cpasswd",
    "/api/v1/cameras/cam%00.json",
    "/api/v1/cameras/%00/series?signal=blur",
    "/api/v1/cameras/../../../etc/passwd",
    "/api/v1/cameras/%2F%2Fetc%2Fpasswd/series?signal=blur",
    "/api/v1/../../../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "//etc/passwd",
    "/docs/..%2F..%2F..%2Fetc%2Fpasswd",
    "/static/..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/v1/cameras/..%2F..%2F..%2F" + "..%2F" * 50 + "etc%2Fpasswd",
]


def static_mounts(app) -> list[str]:
    return [route.path for route in app.routes if isinstance(route, Mount) and isinstance(route.app, StaticFiles)]


def test_path_traversal_reads_no_file(app, api_config, unchanged):
    port = api_config[0].api_port
    paths = list(TRAVERSALS)
    for mount in static_mounts(app):  # whatever static files the app serves, none from outside their folder
        paths += [f"{mount}/..%2F..%2F..%2F..%2Fetc%2Fpasswd", f"{mount}/../../../../etc/passwd"]
        paths += [f"{mount}/%2e%2e/%2e%2e/%2e%2e/api/app.py", f"{mount}/..%5C..%5Capi%5Capp.py"]
    for path in paths:
        status, content_type, body = raw_get(port, path)
        assert status in (400, 404, 422), (path, status, body[:200])
        assert content_type.startswith("application/json"), (path, content_type)
        assert json.loads(body)["detail"], path
        for leak in (PASSWD, "from __future__", REPO, "Traceback"):
            assert leak.encode() not in body, (path, body[:200])


# --- tokens -----------------------------------------------------------------------------------------------------

WRONG_TOKENS = [
    "wrong",
    hash_token(TOKEN),  # holding the stored hash grants nothing
    TOKEN[:-1],
    TOKEN + "x",
    TOKEN.upper(),
    "x" * 8_000,
    f"{TOKEN},{TOKEN}",
]
MALFORMED_AUTHORIZATION = [
    "Bearer",
    "Basic dXNlcjpwYXNz",
    f"Basic {TOKEN}",
    f"Token {TOKEN}",
    TOKEN,
    f"{TOKEN} Bearer",
    f"Bearer {TOKEN} {TOKEN}",
    "Bearer\u00a0" + TOKEN,
    "Bearer " + "é" * 10,
]


def state_changing_routes(client) -> list[tuple[str, str]]:
    paths = client.get("/openapi.json").json()["paths"]
    return [(m.upper(), p) for p, ops in paths.items() for m in ops if m.lower() not in ("get", "head", "options")]


def comparable(r) -> tuple:
    """What a client can read from a response, but its date: two of these equal say the same thing."""
    return r.status_code, r.content, sorted((k, v) for k, v in r.headers.items() if k.lower() != "date")


def test_every_state_changing_route_needs_a_valid_token_and_says_nothing_more(client, unchanged):
    routes = state_changing_routes(client)
    assert ("POST", "/api/v1/sql") in routes
    for method, path in routes:
        missing = client.request(method, path, json={"sql": "DROP TABLE alerts"})
        assert_clean_refusal(missing, 401)
        assert missing.headers["www-authenticate"] == "Bearer"
        answers = [
            client.request(method, path, json={"sql": "DROP TABLE alerts"}, headers=auth(token))
            for token in WRONG_TOKENS
        ]
        for r in answers:
            assert_clean_refusal(r, 401)
        # a near miss, the stored hash and a random guess get the very same answer
        assert len({repr(comparable(r)) for r in answers}) == 1, [r.text for r in answers]


@pytest.mark.parametrize("header", MALFORMED_AUTHORIZATION, ids=range(len(MALFORMED_AUTHORIZATION)))
def test_malformed_authorization_headers_are_401(client, unchanged, header):
    r = client.post("/api/v1/sql", json={"sql": "SELECT 1"}, headers={"Authorization": header.encode("utf-8")})
    assert_clean_refusal(r, 401)
    assert r.json()["detail"] in ("missing API token: send 'Authorization: Bearer TOKEN'", "invalid API token")


def test_an_unauthenticated_query_is_not_vetted_for_the_caller(client, unchanged):
    """Without a token the answer is 401 whatever the SQL: nobody learns what the vetting would say."""
    answers = [
        run_sql(client, sql, headers=auth("wrong"))
        for sql in ("SELECT 1", "DROP TABLE alerts", "SELECT * FROM system.users", "SELECT nonsense(")
    ]
    assert {r.status_code for r in answers} == {401}
    assert len({r.content for r in answers}) == 1


def test_reads_behind_tokens_answer_alike_for_every_wrong_token(client, configure, unchanged):
    configure(api_read_public=False)
    schema = client.get("/openapi.json", headers=auth()).json()["paths"]
    paths = [p for p, ops in schema.items() if "get" in ops and p.startswith("/api/")]  # health needs no token
    for path in paths:
        if "{camera_id}" in path:
            path = path.replace("{camera_id}", unchanged)
        answers = [client.get(path, params={"signal": "blur"}, headers=auth(t)) for t in WRONG_TOKENS[:4]]
        answers.append(client.get(path, params={"signal": "blur"}))
        for r in answers:
            assert_clean_refusal(r, 401)
        assert len({repr(comparable(r)) for r in answers[:-1]}) == 1, path


# --- malformed bodies -------------------------------------------------------------------------------------------

JSON = {"Content-Type": "application/json"}
DEEP = b'{"sql": "SELECT 1", "parameters": {"p": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"null",
        b"[]",
        b'"SELECT 1"',
        b'{"sql": "SELECT 1",}',
        b'{"sql": "SELECT 1"',
        b"\xff\xfe\x00{\x00}",
        b'{"sql": "SELECT \xff\xfe"}',
        DEEP,
        b'{"sql": ["SELECT 1"]}',
        b'{"sql": null}',
        b'{"sql": "SELECT 1", "parameters": {"p": [[1]]}}',
        b'{"sql": "SELECT 1", "parameters": {"p": {"q": 1}}}',
        b'{"sql": "SELECT 1", "parameters": {"1; DROP": 1}}',
        b'{"sql": "SELECT 1", "parameters": {"' + b"p" * 65 + b'": 1}}',
    ],
    ids=range(16),
)
def test_malformed_json_bodies_are_4xx(client, unchanged, body):
    r = client.post("/api/v1/sql", content=body, headers={**auth(), **JSON})
    assert_clean_refusal(r, 400, 422)
    assert_still_answers(client)


def test_a_duplicated_key_cannot_smuggle_a_second_statement(client, unchanged):
    body = b'{"sql": "SELECT 1", "sql": "DROP TABLE alerts"}'
    r = client.post("/api/v1/sql", content=body, headers={**auth(), **JSON})
    assert_clean_refusal(r, 400)
    assert r.json()["detail"]["reason"] == "not_a_select"


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml"],
)
def test_bodies_that_are_not_declared_json_are_4xx(client, unchanged, content_type):
    headers = {**auth(), **({"Content-Type": content_type} if content_type else {})}
    r = client.post("/api/v1/sql", content=json.dumps({"sql": "SELECT 1"}).encode(), headers=headers)
    assert_clean_refusal(r, 400, 415, 422)


def test_oversized_bodies_are_413_before_they_are_read(client, unchanged):
    big = json.dumps({"sql": "SELECT '" + "x" * (2 * MAX_BODY_BYTES) + "'"}).encode()
    assert_clean_refusal(client.post("/api/v1/sql", content=big, headers={**auth(), **JSON}), 413)

    def chunks():  # no Content-Length: the limit counts what arrives
        yield b'{"sql": "SELECT 1", "parameters": {"p": "'
        for _ in range(64):
            yield b"x" * 65536
        yield b'"}}'

    assert_clean_refusal(client.post("/api/v1/sql", content=chunks(), headers={**auth(), **JSON}), 413)
    # ...and without a token it is 401: the token is checked before anything is read
    assert_clean_refusal(client.post("/api/v1/sql", content=big, headers=JSON), 401)
    # a body within the limit whose query is too long is 422
    long = json.dumps({"sql": "SELECT '" + "x" * 200_000 + "'"}).encode()
    assert_clean_refusal(client.post("/api/v1/sql", content=long, headers={**auth(), **JSON}), 422)
    assert_still_answers(client)
