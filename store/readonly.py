"""Run an analyst's SQL read-only, bounded, one statement at a time: for the API's query endpoint.

Two layers. :func:`vet` is pure: one ``SELECT`` (or ``WITH ... SELECT``) statement, no ``SETTINGS``,
``FORMAT`` or ``INTO OUTFILE`` clause (the limits are ours to set), no ``system`` or
``information_schema`` table (``system.query_log`` holds other people's queries, ``system.users`` and
friends the server's set-up), no table function but ``numbers`` wherever its name is called (a comma join
is a table position too, and ``file()`` is also a scalar function that reads any file the process can), no
table of another database after FROM or JOIN, no ``{name:Identifier}`` parameter (it names a table the
vetting never saw). Heredoc strings (``$tag$…$tag$``) are read as strings, as the engine reads them.
:func:`run_readonly` then refuses a table of any other database the engine holds, wherever it is named
(:func:`refuse_other_databases`), and runs the statement with server-side settings: ``readonly=1`` (no
writes, no DDL, no setting changes, no ``url()``/``remote()``/``executable()``), ``max_result_rows``,
``max_result_bytes``, ``max_execution_time``, ``max_memory_usage``. The engine's refusals come back
short: the reason, without the echoed query, the settings, the internals or file paths. On a ClickHouse
server, give the API a user that can only read the cvops database: that grant, not this module, is the
security boundary; this module is the seat belt.

>>> vet("SELECT camera_id, count() FROM frame_metrics GROUP BY camera_id;")
'SELECT camera_id, count() FROM frame_metrics GROUP BY camera_id'
>>> try:
...     vet("SELECT 1; DROP TABLE frame_metrics")
... except RefusedQuery as refused:
...     print(refused)
multiple_statements: one statement at a time; found 2
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from store.client import QueryResult, Store

ALLOWED_TABLE_FUNCTIONS = frozenset({"numbers"})
# The table functions of ClickHouse 26.9 (chdb 4.4), lower case (system.table_functions; a test checks the list).
TABLE_FUNCTIONS = frozenset(
    """arrowstream azureblobstorage azureblobstoragecluster bigquery cluster clusterallreplicas cosn deltalake
    deltalakeazure deltalakeazurecluster deltalakecluster deltalakelocal deltalakes3 deltalakes3cluster
    dictionary eval executable file filecluster filesystem format fuzzjson fuzzquery gcs generate_series
    generaterandom generateseries hdfs hdfscluster hudi hudicluster iceberg icebergazure icebergazurecluster
    icebergcluster iceberghdfs iceberghdfscluster iceberglocal iceberglocalcluster icebergs3
    icebergs3cluster input jdbc loop merge mergetreeanalyzeindexes mergetreeanalyzeindexesuuid
    mergetreecodecblockcounts mergetreeindex mergetreeprojection mergetreetextindex mongodb mysql null
    numbers numbers_mt odbc oss paimon paimonazure paimonazurecluster paimoncluster paimonhdfs
    paimonhdfscluster paimonlocal paimons3 paimons3cluster postgresql primes prometheusquery
    prometheusqueryrange python redis remote remotesecure s3 s3cluster sqlite sqlstandardvalues
    timeseriesdata timeseriesmetricfamilies timeseriesmetrics timeseriessamples timeseriesselector
    timeseriestags url urlcluster values view viewexplain viewifpermitted ytsaurus zeros zeros_mt""".split()  # noqa: SIM905
)
FORBIDDEN_DATABASES = frozenset({"system", "information_schema"})
FORBIDDEN_CLAUSES = frozenset({"settings", "format", "outfile"})
_ERROR_CODE = re.compile(r"\(([A-Z][A-Z_]+)\)")
_HEREDOC = re.compile(r"\$([A-Za-z0-9_]*)\$")


class RefusedQuery(ValueError):
    """A query refused before or by the engine. ``reason`` is a short code, ``detail`` says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class SqlLimits:
    max_rows: int = 10_000
    max_result_bytes: int = 64 << 20
    max_execution_s: float = 10.0
    max_memory_bytes: int = 1 << 30


def tokens(sql: str) -> list[str]:
    """Words (quoted identifiers unquoted), string literals as ``'…'`` and single punctuation characters;
    comments dropped. Raises :class:`RefusedQuery` on an unterminated string or comment."""
    out, i, n = [], 0, len(sql)
    while i < n:
        c = sql[i]
        if c.isspace():
            i += 1
        elif sql.startswith("--", i) or c == "#":
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            if j < 0:
                raise RefusedQuery("syntax", "unterminated /* comment")
            i = j + 2
        elif c == "$" and (tag := _HEREDOC.match(sql, i)):
            j = sql.find(tag.group(0), tag.end())
            if j < 0:
                raise RefusedQuery("syntax", f"unterminated {tag.group(0)} heredoc")
            out.append("'…'")
            i = j + len(tag.group(0))
        elif c in "'\"`":
            j, buf = i + 1, []
            while True:
                if j >= n:
                    raise RefusedQuery("syntax", f"unterminated {c}quoted{c} text")
                if sql[j] == "\\":
                    buf.append(sql[j : j + 2])
                    j += 2
                elif sql[j] == c and sql.startswith(c * 2, j):
                    buf.append(c)
                    j += 2
                elif sql[j] == c:
                    break
                else:
                    buf.append(sql[j])
                    j += 1
            text = "".join(buf)
            out.append("'…'" if c == "'" else text.lower())
            i = j + 1
        elif c.isalnum() or c == "_":
            j = i
            while j < n and (sql[j].isalnum() or sql[j] in "_$"):
                j += 1
            out.append(sql[i:j].lower())
            i = j
        else:
            out.append(c)
            i += 1
    return out


def vet(sql: str, database: str | None = None) -> str:
    """The statement to run (trailing ``;`` and blanks removed), or :class:`RefusedQuery` saying why not.
    ``database`` is the one queries may read. A table function (:data:`TABLE_FUNCTIONS`) is refused wherever
    it is called, but ``numbers``.

    >>> vet("SELECT * FROM numbers(3) AS a, file('/etc/passwd', 'LineAsString') AS b")
    Traceback (most recent call last):
    store.readonly.RefusedQuery: forbidden_table: table function file() is not open to queries
    >>> vet("SELECT $$'$$, name FROM system.tables -- '")
    Traceback (most recent call last):
    store.readonly.RefusedQuery: forbidden_table: tables of database system are not open to queries
    """
    toks = tokens(sql)
    while toks and toks[-1] == ";":
        toks.pop()
    if not toks:
        raise RefusedQuery("empty", "no statement")
    if ";" in toks:
        raise RefusedQuery("multiple_statements", f"one statement at a time; found {toks.count(';') + 1}")
    if toks[0] not in ("select", "with"):
        raise RefusedQuery("not_a_select", f"only SELECT or WITH … SELECT may run, not {toks[0].upper()}")
    own = (database or "").lower()
    for i, tok in enumerate(toks):
        prev = toks[i - 1] if i else ""
        nxt = toks[i + 1] if i + 1 < len(toks) else ""
        if tok in FORBIDDEN_CLAUSES:
            raise RefusedQuery("forbidden_clause", f"{tok.upper()} is set by the service, not the query")
        if tok in FORBIDDEN_DATABASES and nxt == ".":
            raise RefusedQuery("forbidden_table", f"{tok} tables are not open to queries")
        if tok in TABLE_FUNCTIONS and nxt == "(" and tok not in ALLOWED_TABLE_FUNCTIONS:
            raise RefusedQuery("forbidden_table", f"table function {tok}() is not open to queries")
        if tok == "identifier" and prev == ":":
            raise RefusedQuery("forbidden_parameter", "{name:Identifier} parameters are not accepted: name tables")
        if tok in ("from", "join") and i + 2 < len(toks):
            name, after = toks[i + 1], toks[i + 2]
            if after == "(" and name not in ALLOWED_TABLE_FUNCTIONS:
                raise RefusedQuery("forbidden_table", f"table function {name}() is not open to queries")
            if after == "." and name != own:
                raise RefusedQuery("forbidden_table", f"tables of database {name} are not open to queries")
    return sql.strip().rstrip(";").rstrip()


def refuse_other_databases(sql: str, database: str | None, databases: Iterable[str]) -> None:
    """:class:`RefusedQuery` when ``sql`` names a table of one of ``databases`` other than ``database``,
    wherever (``FROM a, db.t``, ``IN db.t``): :func:`vet` alone only sees those after FROM and JOIN.

    >>> refuse_other_databases("SELECT m.camera_id FROM frame_metrics AS m, cvops.cameras", "cvops", ["default"])
    >>> refuse_other_databases("SELECT 1 WHERE 'x' IN default.secrets", "cvops", ["default", "cvops"])
    Traceback (most recent call last):
    store.readonly.RefusedQuery: forbidden_table: tables of database default are not open to queries
    """
    others = {name.lower() for name in databases} - {(database or "").lower()}
    toks = tokens(sql)
    for i, tok in enumerate(toks[:-1]):
        if tok in others and toks[i + 1] == "." and (i == 0 or toks[i - 1] != "."):
            raise RefusedQuery("forbidden_table", f"tables of database {tok} are not open to queries")


def run_readonly(
    store: Store, sql: str, parameters: dict | None = None, limits: SqlLimits | None = None
) -> QueryResult:
    """Vet ``sql`` and run it read-only within ``limits``; columns, types and rows, or :class:`RefusedQuery`."""
    limits = limits or SqlLimits()
    statement = vet(sql, store.database)
    refuse_other_databases(statement, store.database, _databases(store))
    settings = {
        "max_result_rows": limits.max_rows,
        "max_result_bytes": limits.max_result_bytes,
        "result_overflow_mode": "throw",
        "max_execution_time": limits.max_execution_s,
        "max_memory_usage": limits.max_memory_bytes,
        "readonly": 1,  # last: once read-only, the engine refuses any further setting change
    }
    try:
        result = store.reader().query_result(statement, parameters=parameters, settings=settings)
    except Exception as exc:
        store.drop_reader()  # whatever state the failure left on that session goes with it
        codes = _ERROR_CODE.findall(str(exc))
        code = codes[-1].lower() if codes else type(exc).__name__
        raise RefusedQuery(f"engine_{code}", short_reason(str(exc))) from None
    # The engine counts a constant column once per block (SELECT repeat('x', 1000000) FROM numbers(500) passes
    # max_result_bytes), so the result is measured again here, before anyone serialises it.
    if _size(result.rows) > limits.max_result_bytes:
        raise RefusedQuery(
            "result_too_large", f"the result holds more than {limits.max_result_bytes} bytes: select less"
        )
    return result


def _size(value) -> int:
    """About how many bytes ``value`` (rows of cells) holds: text and bytes by length, other scalars 8."""
    if isinstance(value, str | bytes | bytearray):
        return len(value)
    if isinstance(value, list | tuple | set | frozenset):
        return sum(_size(v) for v in value) + 8
    if isinstance(value, dict):
        return sum(_size(k) + _size(v) for k, v in value.items()) + 8
    return 8


def _databases(store: Store) -> list[str]:
    """The databases the engine holds; none when it will not say (on a server, the grant is the boundary)."""
    try:
        return [name for (name,) in store.reader().query("SELECT name FROM system.databases")]
    except Exception:
        return []


_ENGINE_PREFIX = re.compile(r"^(?:Code: \d+\.\s*|DB::\w+:\s*)+")
_ENGINE_TAIL = re.compile(r"[.:,]?\s*(?:In scope |while executing |Stack trace|SETTINGS )")
_PATH = re.compile(r"(?<![\w'\"])/(?:[^\s/'\",;:()]+/)+[^\s'\",;:()]*")


def short_reason(message: str) -> str:
    """An engine error as its first line, without the error number, the echoed query and settings, the
    internals after it, or file paths.

    >>> short_reason("Code: 107. DB::ErrnoException: Cannot open file /srv/x/y: , errno: 2. In scope SELECT 1")
    'Cannot open file …: , errno: 2'
    >>> short_reason("Code: 164. DB::Exception: default: Cannot execute query in readonly mode. (READONLY)")
    'default: Cannot execute query in readonly mode.'
    >>> short_reason("Code: 241. DB::Exception: Code: 241. DB::Exception: Out of memory. (MEMORY) (version 26.9). (X")
    'Out of memory.'
    """
    lines = message.strip().splitlines()
    first = _ENGINE_PREFIX.sub("", lines[0] if lines else "")
    first = _ENGINE_TAIL.split(first, maxsplit=1)[0]
    first = re.split(r"\s*\([A-Z][A-Z_]+\)|\s*\(version ", first, maxsplit=1)[0]
    return _PATH.sub("…", first).strip()[:300] or "the engine refused the query"
