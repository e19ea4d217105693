"""Run an analyst's SQL read-only, bounded, one statement at a time: for the API's query endpoint.

Two layers. :func:`vet` is pure: one ``SELECT`` (or ``WITH ... SELECT``) statement, no ``SETTINGS``,
``FORMAT`` or ``INTO OUTFILE`` clause (the limits are ours to set), no ``system`` or
``information_schema`` table (``system.query_log`` holds other people's queries, ``system.users`` and
friends the server's set-up), no table function but ``numbers``, no table of another database.
:func:`run_readonly` then runs it with server-side settings: ``readonly=1`` (no writes, no DDL, no
setting changes, no ``file()``/``url()``), ``max_result_rows``, ``max_execution_time``,
``max_memory_usage``. On a ClickHouse server, give the API a user that can only read the cvops database:
that grant, not this module, is the security boundary; this module is the seat belt.

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
from dataclasses import dataclass

from store.client import QueryResult, Store

ALLOWED_TABLE_FUNCTIONS = frozenset({"numbers"})
FORBIDDEN_DATABASES = frozenset({"system", "information_schema"})
FORBIDDEN_CLAUSES = frozenset({"settings", "format", "outfile"})
_ERROR_CODE = re.compile(r"\(([A-Z][A-Z_]+)\)")


class RefusedQuery(ValueError):
    """A query refused before or by the engine. ``reason`` is a short code, ``detail`` says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class SqlLimits:
    max_rows: int = 10_000
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
    """The statement to run (trailing ``;`` and blanks removed), or :class:`RefusedQuery` saying why not."""
    toks = tokens(sql)
    while toks and toks[-1] == ";":
        toks.pop()
    if not toks:
        raise RefusedQuery("empty", "no statement")
    if ";" in toks:
        raise RefusedQuery("multiple_statements", f"one statement at a time; found {toks.count(';') + 1}")
    if toks[0] not in ("select", "with"):
        raise RefusedQuery("not_a_select", f"only SELECT or WITH … SELECT may run, not {toks[0].upper()}")
    for i, tok in enumerate(toks):
        nxt = toks[i + 1] if i + 1 < len(toks) else ""
        if tok in FORBIDDEN_CLAUSES:
            raise RefusedQuery("forbidden_clause", f"{tok.upper()} is set by the service, not the query")
        if tok in FORBIDDEN_DATABASES and nxt == ".":
            raise RefusedQuery("forbidden_table", f"{tok} tables are not open to queries")
        if tok in ("from", "join") and i + 2 < len(toks):
            name, after = toks[i + 1], toks[i + 2]
            if after == "(" and name not in ALLOWED_TABLE_FUNCTIONS:
                raise RefusedQuery("forbidden_table", f"table function {name}() is not open to queries")
            if after == "." and name != (database or "").lower():
                raise RefusedQuery("forbidden_table", f"tables of database {name} are not open to queries")
    return sql.strip().rstrip(";").rstrip()


def run_readonly(
    store: Store, sql: str, parameters: dict | None = None, limits: SqlLimits | None = None
) -> QueryResult:
    """Vet ``sql`` and run it read-only within ``limits``; columns, types and rows, or :class:`RefusedQuery`."""
    limits = limits or SqlLimits()
    statement = vet(sql, store.database)
    settings = {
        "max_result_rows": limits.max_rows,
        "result_overflow_mode": "throw",
        "max_execution_time": limits.max_execution_s,
        "max_memory_usage": limits.max_memory_bytes,
        "readonly": 1,  # last: once read-only, the engine refuses any further setting change
    }
    try:
        return store.reader().query_result(statement, parameters=parameters, settings=settings)
    except Exception as exc:
        store.drop_reader()  # whatever state the failure left on that session goes with it
        codes = _ERROR_CODE.findall(str(exc))
        code = codes[-1].lower() if codes else type(exc).__name__
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RefusedQuery(f"engine_{code}", first[:500]) from None
