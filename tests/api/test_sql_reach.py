"""What an analyst's token can reach through ``POST /api/v1/sql``, on the real app and embedded engine: not a
file of the host, not the API's environment, not another database of the engine, not a ``system`` table,
in any spelling tried; the cookbook still answers as it does on the store; a result is measured while it is
read; analysts' queries have slots of their own and never starve the other routes.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import time
import uuid

import httpx
import pytest

from api.sql import json_cell
from store import Store
from store.cookbook import recipes, run
from tests.api.conftest import auth, seed
from tests.store.records import alert, metrics

pytestmark = pytest.mark.integration

SECRET = f"secret-{uuid.uuid4().hex}"
HOST_SECRET = f"host-secret-{uuid.uuid4().hex}"
OTHER = "reach_other"
# What a file, the environment or another database would show if any of it came back.
LEAKS = (SECRET, HOST_SECRET, "root:x:0:0", "CVOPS_KAFKA_BOOTSTRAP=", "PATH=")
INVISIBLE = ["\u200b", "\u2060", "\ufeff", "\u00a0", "\u3000", "\u180e", "\u200d"]


def post(client: httpx.Client, sql: str, parameters: dict | None = None) -> httpx.Response:
    body = {"sql": sql, **({"parameters": parameters} if parameters else {})}
    return client.post("/api/v1/sql", json=body, headers=auth())


def assert_refused_without_leak(r: httpx.Response) -> None:
    assert r.status_code == 400, r.text[:500]
    assert r.json()["detail"]["reason"], r.text[:500]
    for leak in LEAKS:
        assert leak not in r.text, f"{leak!r} in {r.text[:500]}"


@pytest.fixture(scope="module")
def reach(app, tmp_path_factory) -> str:
    """A file of the host holding a secret (its path returned) and another database of the engine with a
    table of secrets."""
    store: Store = app.state.store
    store.command(f"CREATE DATABASE IF NOT EXISTS {OTHER}")
    store.command(f"CREATE TABLE IF NOT EXISTS {OTHER}.secrets (s String) ENGINE = MergeTree ORDER BY s")
    store.command(f"INSERT INTO {OTHER}.secrets VALUES ({{s:String}})", {"s": SECRET})
    path = tmp_path_factory.mktemp("host") / "secret.txt"
    path.write_text(f"{HOST_SECRET}\nroot:x:0:0\n")
    yield str(path)
    store.command(f"DROP DATABASE IF EXISTS {OTHER}")


# --- files and the environment ----------------------------------------------------------------------------------

# {P} is the path as a string literal; {p} the path as written.
FILE_FORMS = [
    "SELECT file({P})",
    "SELECT substring(file({P}), 1, 200) AS f",
    "SELECT FILE({P})",
    "SELECT File({P})",
    *[f"SELECT file{c}({{P}})" for c in INVISIBLE],
    *[f"SELECT{c}file({{P}})" for c in INVISIBLE],
    "SELECT file/**/({P})",
    "SELECT file /* ( */ ({P})",
    "SELECT file -- (\n({P})",
    "SELECT file # (\n({P})",
    "SELECT `file`({P})",
    'SELECT "file"({P})',
    "SELECT `fi\\x6ce`({P})",
    'SELECT "\\x66ile"({P})',
    "SELECT file($${p}$$)",
    "SELECT file($t${p}$t$)",
    "SELECT file({{path:String}})",
    "SELECT file(concat(substring({P}, 1, 3), substring({P}, 4)))",
    "SELECT * FROM (SELECT file({P}) AS f)",
    "WITH f AS (SELECT file({P}) AS c) SELECT c FROM f",
    "WITH file({P}) AS c SELECT c",
    "SELECT (SELECT file({P}))",
    "SELECT arrayMap(x -> file(x), [{P}])",
    "SELECT 1 WHERE 'x' IN (SELECT file({P}))",
    "SELECT number FROM numbers(1) WHERE file({P}) != ''",
    "SELECT number FROM numbers(1) ORDER BY file({P})",
    "SELECT '' UNION ALL SELECT file({P})",
    "SELECT * FROM numbers(1) AS a JOIN (SELECT file({P}) AS f) AS b ON 1",
    "SELECT max(file({P})) OVER ()",
    "SELECT if(1, file({P}), '')",
    "SELECT tuple(file({P})).1",
    "SELECT throwIf(1, file({P}))",
    "SELECT CAST(file({P}) AS UInt8)",
    "SELECT toUInt8(file({P}))",
    "SELECT fileIf({P}, 1)",
    "SELECT fileOrNull({P})",
    "SELECT * APPLY file FROM (SELECT {P} AS p)",
    "SELECT * APPLY(file) FROM (SELECT {P} AS p)",
    "SELECT COLUMNS('p') APPLY file FROM (SELECT {P} AS p)",
    "SELECT file({P}) SETTINGS readonly = 0",
    "SELECT * FROM file({P}, 'RawBLOB')",
    "SELECT * FROM file({P}, 'LineAsString')",
    "SELECT * FROM FILE({P}, 'RawBLOB')",
    "SELECT * FROM `file`({P}, 'RawBLOB')",
    "SELECT * FROM numbers(1) AS a, file({P}, 'RawBLOB') AS b",
    "SELECT * FROM numbers(1) AS a JOIN file({P}, 'RawBLOB') AS b ON 1",
    "SELECT * FROM numbers(1) WHERE 1 IN (SELECT length(raw_blob) FROM file({P}, 'RawBLOB'))",
    "SELECT * FROM fileCluster('default', {P}, 'RawBLOB')",
    "SELECT * FROM url(concat('file://', {P}), 'RawBLOB')",
    "SELECT * FROM s3(concat('file://', {P}), 'RawBLOB')",
    "SELECT * FROM view(SELECT file({P}))",
    "SELECT * FROM filesystem(dirname({P}))",
    "SELECT * FROM executable(concat('cat ', {P}), 'RawBLOB', 'x String')",
    "SELECT * FROM python('os')",
]


@pytest.mark.parametrize("form", FILE_FORMS, ids=range(len(FILE_FORMS)))
@pytest.mark.parametrize("target", ["host_file", "/proc/self/environ", "/etc/passwd"])
def test_no_file_and_not_the_environment_in_any_spelling(client, reach, form, target):
    path = reach if target == "host_file" else target
    sql = form.replace("{P}", f"'{path}'").replace("{p}", path).replace("{{path:String}}", "{path:String}")
    r = post(client, sql, {"path": path} if "{path:" in sql else None)
    assert_refused_without_leak(r)


def test_the_engine_would_read_the_file_were_it_asked(client, reach, store):
    """The forms above are refused by the vetting, not for want of a file: the store reads it when asked."""
    assert store.query(f"SELECT file('{reach}')")[0][0].startswith(HOST_SECRET)


# --- another database ------------------------------------------------------------------------------------------

OTHER_DB_FORMS = [
    "SELECT * FROM reach_other.secrets",
    "SELECT s FROM `reach_other`.`secrets`",
    'SELECT s FROM "reach_other"."secrets"',
    'SELECT s FROM "reach\\x5fother".secrets',
    "SELECT s FROM `reach_\\x6fther`.`secrets`",
    "SELECT s FROM reach_other . secrets",
    "SELECT s FROM reach_other/**/.secrets",
    *[f"SELECT s FROM reach_other{c}.secrets" for c in INVISIBLE],
    "SELECT 1 AS x WHERE 'probe' IN reach_other.secrets",
    "SELECT (SELECT any(s) FROM reach_other.secrets) AS s",
    "SELECT throwIf(1, (SELECT any(s) FROM reach_other.secrets))",
    "SELECT throwIf((SELECT count() FROM reach_other.secrets) > 0)",
    "SELECT toUInt8((SELECT any(s) FROM reach_other.secrets))",
    "SELECT * FROM numbers(1) AS a, reach_other.secrets AS b",
    "SELECT * FROM numbers(1) AS a JOIN reach_other.secrets AS b ON 1",
    "WITH x AS (SELECT * FROM reach_other.secrets) SELECT * FROM x",
    "SELECT * FROM (SELECT * FROM reach_other.secrets)",
    "SELECT '' AS s UNION ALL SELECT s FROM reach_other.secrets",
    "SELECT reach_other.secrets.s FROM reach_other.secrets",
    "SELECT * FROM merge('reach_other', '.*')",
    "SELECT * FROM merge(REGEXP('reach'), '.*')",
    "SELECT * FROM remote('127.0.0.1', reach_other.secrets)",
    "SELECT * FROM cluster('default', reach_other.secrets)",
    "SELECT * FROM view(SELECT * FROM reach_other.secrets)",
    "SELECT * FROM mergeTreeIndex('reach_other', 'secrets')",
    "SELECT joinGet('reach_other.secrets', 's', 1)",
    "SELECT dictGet('reach_other.secrets', 's', 1)",
    "SELECT hasColumnInTable('reach_other', 'secrets', 's')",
    "SELECT * FROM secrets",  # its own database has no such table
    ("SELECT * FROM {t:Identifier}", {"t": "reach_other.secrets"}),
    ("SELECT * FROM {d:Identifier}.{t:Identifier}", {"d": "reach_other", "t": "secrets"}),
]


@pytest.mark.parametrize("form", OTHER_DB_FORMS, ids=range(len(OTHER_DB_FORMS)))
def test_no_other_database_in_any_spelling(client, reach, form):
    sql, parameters = form if isinstance(form, tuple) else (form, None)
    assert_refused_without_leak(post(client, sql, parameters))


# --- the engine's own tables ------------------------------------------------------------------------------------

SYSTEM_FORMS = [
    "SELECT * FROM system.tables",
    "SELECT name FROM system.databases",
    "SELECT * FROM `system`.`query_log`",
    'SELECT * FROM "sys\\x74em".tables',
    "SELECT * FROM system . settings",
    *[f"SELECT * FROM system{c}.tables" for c in INVISIBLE],
    "SELECT * FROM SYSTEM.tables",
    "SELECT 1 IN system.one",
    "SELECT (SELECT count() FROM system.processes)",
    "SELECT * FROM numbers(1) AS a, system.databases AS b",
    "SELECT * FROM system.one",
    "SELECT * FROM INFORMATION_SCHEMA.TABLES",
    "SELECT * FROM information_schema.columns",
    "SELECT * FROM merge('system', '.*')",
    "SELECT getServerSetting('path')",
    "SELECT getMacro('x')",
    "SELECT hostName()",
    "SELECT currentUser()",
    ("SELECT * FROM {t:Identifier}", {"t": "system.tables"}),
]


@pytest.mark.parametrize("form", SYSTEM_FORMS, ids=range(len(SYSTEM_FORMS)))
def test_no_system_table_and_no_server_set_up_in_any_spelling(client, reach, form):
    sql, parameters = form if isinstance(form, tuple) else (form, None)
    r = post(client, sql, parameters)
    assert_refused_without_leak(r)
    assert "reach_other" not in r.text or "reach_other" in sql


# --- what analysts do ---------------------------------------------------------------------------------------------


def test_the_cookbook_answers_through_the_endpoint_as_on_the_store(client, store):
    camera = f"cam-{uuid.uuid4().hex[:8]}"
    at = time.time() - 120
    seed(store, [metrics(camera, i, at + i) for i in range(20)], [alert(camera, 0, at + 1), alert(camera, 1, at + 2)])
    since = dt.datetime.fromtimestamp(at - 3600, tz=dt.UTC)
    until = dt.datetime.fromtimestamp(at + 3600, tz=dt.UTC)
    values = {"since": since, "until": until, "camera": camera, "gap_s": 5.0}
    for name, recipe in recipes().items():
        parameters = {key: values[key] for key in recipe.parameters}
        direct = run(store, name, **parameters)
        sent = {k: v.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if isinstance(v, dt.datetime) else v
                for k, v in parameters.items()}  # fmt: skip
        r = post(client, recipe.sql, sent)
        assert r.status_code == 200, (name, r.text)
        assert r.json()["columns"] == direct.columns, name
        assert r.json()["rows"] == json.loads(json.dumps([[json_cell(v) for v in row] for row in direct.rows])), name
    fleet = post(client, recipes()["fleet_latest"].sql).json()
    assert [row[3] for row in fleet["rows"] if row[0] == camera] == [20]


def test_a_result_is_refused_while_it_is_read(client, monkeypatch):
    """A trillion rows of a constant kilobyte pass the engine's byte count (a constant counts once a block);
    read whole they would run out of time or memory; read block by block the first block is too big."""
    monkeypatch.setenv("CVOPS_STORE_SQL_MAX_ROWS", str(10**13))
    monkeypatch.setenv("CVOPS_STORE_SQL_MAX_RESULT_BYTES", str(1 << 20))
    monkeypatch.setenv("CVOPS_STORE_SQL_MAX_EXECUTION_S", "120")
    r = post(client, "SELECT repeat('x', 1000) AS s FROM numbers(1000000000000)")
    assert r.status_code == 400, r.text[:300]
    assert r.json()["detail"]["reason"] == "result_too_large"
    assert post(client, "SELECT 1 AS one").json()["rows"] == [[1]]


def test_analysts_queries_have_their_own_slots_and_starve_no_other_route(client, store, api_config, monkeypatch):
    """The store's read session held: two queries take the two slots and wait; every other one is answered
    429 at once, and the other routes, on the shared thread pool (40 threads), still answer. Sent more than
    that pool holds, the queries would take it all if they queued on it."""
    monkeypatch.setenv("CVOPS_STORE_SQL_MAX_CONCURRENT", "2")
    base = f"http://127.0.0.1:{api_config[0].api_port}"

    def query() -> httpx.Response:
        with httpx.Client(base_url=base, timeout=120) as c:
            return post(c, "SELECT 42 AS answer")

    reader = store.reader()
    sent = 45
    with concurrent.futures.ThreadPoolExecutor(sent) as pool:
        reader._lock.acquire()  # holding the session is how a query is made to wait, without timing
        try:
            futures = [pool.submit(query) for _ in range(sent)]
            deadline = time.monotonic() + 60
            while sum(f.done() for f in futures) < sent - 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            answered = [f.result() for f in futures if f.done()]
            assert len(answered) == sent - 2, f"{len(answered)} of {sent} answered while two slots are held"
            assert {r.status_code for r in answered} == {429}
            assert all(r.headers["retry-after"] == "1" and r.json()["detail"]["reason"] == "busy" for r in answered)
            assert client.get("/api/v1/cameras", timeout=30).status_code == 200
            assert client.get("/health/live", timeout=30).status_code == 200
            assert post(client, "SELECT 1").status_code == 429
            assert sum(f.done() for f in futures) == sent - 2  # the two were held all along
        finally:
            reader._lock.release()
        held = [f.result(timeout=60) for f in futures if f.result(timeout=60).status_code != 429]
    assert [(r.status_code, r.json()["rows"]) for r in held] == [(200, [[42]])] * 2
    assert post(client, "SELECT 1 AS one").json()["rows"] == [[1]]
