"""Connect to ClickHouse by DSN: the embedded engine (chdb) or a server over HTTP(S).

``chdb://.cvops/store`` (relative) or ``chdb:///var/lib/cvops`` (absolute) opens an embedded ClickHouse
engine in this process. Only one process may own a chdb directory at a time, so cvops runs the store
writer and the API in the same process when the DSN is chdb.
``http://user:password@host:8123/db`` (or ``https://``) talks to a ClickHouse server; the database is
created if missing.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

import clickhouse_connect


class Store:
    """A ClickHouse client shared by threads of one process (calls are serialised by a lock)."""

    def __init__(self, client, dsn: str):
        self._client = client
        self._lock = threading.Lock()
        self.dsn = dsn
        self.embedded = dsn.startswith("chdb:")

    def command(self, sql: str, parameters: dict | None = None):
        with self._lock:
            return self._client.command(sql, parameters=parameters)

    def query(self, sql: str, parameters: dict | None = None, settings: dict | None = None) -> list[tuple]:
        with self._lock:
            return self._client.query(sql, parameters=parameters, settings=settings).result_rows

    def query_dicts(self, sql: str, parameters: dict | None = None) -> list[dict]:
        with self._lock:
            result = self._client.query(sql, parameters=parameters)
            return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

    def insert(self, table: str, rows: Sequence[Sequence], column_names: Sequence[str]) -> None:
        with self._lock:
            self._client.insert(table, rows, column_names=list(column_names))

    def ping(self) -> bool:
        try:
            return self.query("SELECT 1") == [(1,)]
        except Exception:
            return False

    def close(self) -> None:
        with self._lock:
            self._client.close()


def connect(dsn: str) -> Store:
    """Open the store named by ``dsn``; ValueError with the accepted forms if it is not one."""
    url = urlsplit(dsn)
    if url.scheme == "chdb":
        path = Path(unquote(url.netloc + url.path))
        if not str(path) or str(path) == ".":
            raise ValueError(f"chdb DSN {dsn!r} names no directory, e.g. chdb://.cvops/store")
        path.mkdir(parents=True, exist_ok=True)
        client = clickhouse_connect.get_client(interface="chdb", path=str(path.resolve()))
        return Store(client, dsn)
    if url.scheme in ("http", "https"):
        database = url.path.strip("/") or "default"
        common = dict(
            host=url.hostname or "127.0.0.1",
            port=url.port or (8443 if url.scheme == "https" else 8123),
            username=unquote(url.username or "default"),
            password=unquote(url.password or ""),
            secure=url.scheme == "https",
        )
        if database != "default":
            boot = clickhouse_connect.get_client(**common)
            boot.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
            boot.close()
        return Store(clickhouse_connect.get_client(database=database, **common), dsn)
    raise ValueError(
        f"store DSN {dsn!r} is not supported: use chdb://PATH or http(s)://user:password@host:port/database"
    )
