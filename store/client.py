"""Connect to ClickHouse by DSN: the embedded engine (chdb) or a server over HTTP(S).

``chdb://.cvops/store`` (relative) or ``chdb:///var/lib/cvops`` (absolute) opens an embedded ClickHouse
engine in this process. Only one process may own a chdb directory at a time, and chdb runs one engine per
process, so cvops runs the store writer and the API in the same process when the DSN is chdb.
``chdb://PATH?database=NAME`` uses (and creates) a database other than ``default`` inside that engine: the
tests isolate themselves that way, one engine, one database per test.
``http://user:password@host:8123/db`` (or ``https://``) talks to a ClickHouse server; the database is
created if missing.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import clickhouse_connect

from store.dsn import masked


@dataclass(frozen=True)
class QueryResult:
    """Column names, their ClickHouse types and the rows of one query."""

    columns: list[str]
    types: list[str]
    rows: list[tuple]


class Store:
    """A ClickHouse client shared by threads of one process (calls are serialised by a lock)."""

    def __init__(self, client, dsn: str, database: str = "default", reader_dsn: str = ""):
        self._client = client
        self._lock = threading.Lock()
        self.dsn = dsn
        self.database = database
        self.embedded = dsn.startswith("chdb:")
        self.reader_dsn = reader_dsn  # the analysts' session's DSN; empty = ``dsn``
        self._reader: Store | None = None

    def command(self, sql: str, parameters: dict | None = None, settings: dict | None = None):
        with self._lock:
            return self._client.command(sql, parameters=parameters, settings=settings)

    def query(self, sql: str, parameters: dict | None = None, settings: dict | None = None) -> list[tuple]:
        with self._lock:
            return self._client.query(sql, parameters=parameters, settings=settings).result_rows

    def query_result(self, sql: str, parameters: dict | None = None, settings: dict | None = None) -> QueryResult:
        with self._lock:
            r = self._client.query(sql, parameters=parameters, settings=settings)
            return QueryResult(list(r.column_names), [t.name for t in r.column_types], list(r.result_rows))

    @contextlib.contextmanager
    def query_stream(
        self, sql: str, parameters: dict | None = None, settings: dict | None = None
    ) -> Iterator[tuple[list[str], list[str], Iterator[Sequence[Sequence]]]]:
        """Column names, their types and the result's blocks of rows, read from the engine one block at a
        time while the ``with`` block lasts (leaving it early stops the query). The session is held until then."""
        with self._lock, self._client.query_row_block_stream(sql, parameters=parameters, settings=settings) as stream:
            source = stream.source
            yield list(source.column_names), [t.name for t in source.column_types], iter(stream)

    def query_dicts(self, sql: str, parameters: dict | None = None) -> list[dict]:
        with self._lock:
            result = self._client.query(sql, parameters=parameters)
            return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

    def insert(
        self,
        table: str,
        data: Sequence[Sequence],
        column_names: Sequence[str],
        *,
        column_oriented: bool = False,
        settings: dict | None = None,
        column_types: Sequence[str] | None = None,
    ) -> None:
        """Insert ``data``: rows, or one sequence per column with ``column_oriented=True``.

        ``settings`` carries e.g. ``insert_deduplication_token`` (see :mod:`store.schema`). ``column_types``: the
        columns' ClickHouse types, when the caller knows them (the writer does, from :mod:`store.tables`);
        otherwise the table is described first, one more query per insert.
        """
        with self._lock:
            self._client.insert(
                table,
                data,
                column_names=list(column_names),
                column_type_names=list(column_types) if column_types is not None else None,
                column_oriented=column_oriented,
                settings=settings,
            )

    def ping(self) -> bool:
        try:
            return self.query("SELECT 1") == [(1,)]
        except Exception:
            return False

    def reader(self) -> Store:
        """A second session on the same store for analysts' read-only queries.

        On chdb, a per-call setting that the engine refuses to restore (``readonly`` after a failed write)
        stays on the session; keeping analysts on their own session means it can never reach the writer's.
        On a ClickHouse server, ``reader_dsn`` names a user that can only read this database
        (``CVOPS_STORE_SQL_DSN``, docs/security.md): then the grant, not the vetting, is the boundary.
        """
        with self._lock:
            if self._reader is None:
                self._reader = connect(self.reader_dsn or self.dsn, create=False)
                if self._reader.database != self.database:
                    reader, self._reader = self._reader, None
                    reader.close()
                    raise ValueError(
                        f"the analysts' DSN {masked(self.reader_dsn)!r} names database {reader.database!r}, "
                        f"not the store's {self.database!r}"
                    )
            return self._reader

    def drop_reader(self) -> None:
        """Close the read-only session; the next :meth:`reader` opens a fresh one."""
        with self._lock:
            reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def close(self) -> None:
        self.drop_reader()
        with self._lock:
            self._client.close()


def connect(dsn: str, create: bool = True, reader_dsn: str = "") -> Store:
    """Open the store named by ``dsn``; ValueError with the accepted forms if it is not one. ``create``: create
    its database when missing (a read-only user cannot); ``reader_dsn``: see :meth:`Store.reader`."""
    url = urlsplit(dsn)
    if url.scheme == "chdb":
        path = Path(unquote(url.netloc + url.path))
        if not str(path) or str(path) == ".":
            raise ValueError(f"chdb DSN {masked(dsn)!r} names no directory, e.g. chdb://.cvops/store")
        database = parse_qs(url.query).get("database", ["default"])[0]
        _check_database_name(database)
        path.mkdir(parents=True, exist_ok=True)
        client = clickhouse_connect.get_client(interface="chdb", path=str(path.resolve()))
        if database != "default":
            if create:
                client.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
            client.close()
            client = clickhouse_connect.get_client(interface="chdb", path=str(path.resolve()), database=database)
        return Store(client, dsn, database, reader_dsn)
    if url.scheme in ("http", "https"):
        database = url.path.strip("/") or "default"
        _check_database_name(database)
        common = dict(
            host=url.hostname or "127.0.0.1",
            port=url.port or (8443 if url.scheme == "https" else 8123),
            username=unquote(url.username or "default"),
            password=unquote(url.password or ""),
            secure=url.scheme == "https",
        )
        if database != "default" and create:
            boot = clickhouse_connect.get_client(**common)
            boot.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
            boot.close()
        return Store(clickhouse_connect.get_client(database=database, **common), dsn, database, reader_dsn)
    raise ValueError(
        f"store DSN {masked(dsn)!r} is not supported: use chdb://PATH[?database=NAME] or "
        "http(s)://user:password@host:port/database"
    )


def _check_database_name(name: str) -> None:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"database name {name!r}: use letters, digits and underscores")
