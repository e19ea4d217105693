"""The analysts' session may connect with a DSN of its own (``CVOPS_STORE_SQL_DSN``: on a server, a read-only
user); it must name the store's own database, and opening it never creates one."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from store import connect
from tests.store.conftest import fresh_database


def test_the_analysts_session_uses_its_own_dsn_on_the_same_database(chdb_dir: Path):
    with fresh_database(chdb_dir) as store:
        store.command("CREATE TABLE marks (n UInt8) ENGINE = MergeTree ORDER BY n")
        store.command("INSERT INTO marks VALUES (7)")
        own = connect(store.dsn, reader_dsn=f"chdb://{chdb_dir}?database={store.database}")
        try:
            assert own.reader() is not own and own.reader().dsn == own.reader_dsn
            assert own.reader().query("SELECT n FROM marks") == [(7,)]
        finally:
            own.close()


def test_an_analysts_dsn_on_another_database_is_refused(chdb_dir: Path):
    with fresh_database(chdb_dir) as store, fresh_database(chdb_dir) as other:
        store.reader_dsn = other.dsn
        with pytest.raises(ValueError, match="not the store's"):
            store.reader()


def test_opening_the_analysts_session_creates_no_database(chdb_dir: Path):
    missing = f"t_{uuid.uuid4().hex[:12]}"
    with fresh_database(chdb_dir) as store:
        store.reader_dsn = f"chdb://{chdb_dir}?database={missing}"
        with pytest.raises(Exception, match="does not exist"):
            store.reader()
        assert store.query("SELECT count() FROM system.databases WHERE name = {d:String}", {"d": missing}) == [(0,)]
