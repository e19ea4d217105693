"""One embedded ClickHouse engine per pytest process (chdb runs one engine per process and one process per
directory): every store test gets its own database inside the session's directory, dropped afterwards.

A module-scoped client keeps the engine up while a module's tests run (opening it costs about a second);
it is closed after the module, so tests elsewhere may open an engine on another path."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from store import Store, connect
from store.schema import migrate
from store.settings import StoreSettings


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture(scope="module", autouse=True)
def chdb_engine(chdb_dir: Path) -> Iterator[Store]:
    engine = connect(f"chdb://{chdb_dir}")
    yield engine
    engine.close()


@contextlib.contextmanager
def fresh_database(chdb_dir: Path, settings: StoreSettings | None = None) -> Iterator[Store]:
    """A store on a new database of the session's engine, migrated when ``settings`` is given; dropped after."""
    database = f"t_{uuid.uuid4().hex[:12]}"
    store = connect(f"chdb://{chdb_dir}?database={database}")
    try:
        if settings is not None:
            migrate(store, settings=settings)
        yield store
    finally:
        store.command(f"DROP DATABASE IF EXISTS {database}")
        store.close()


@pytest.fixture
def store_settings() -> StoreSettings:
    return StoreSettings(_env_file=None)


@pytest.fixture
def empty_store(chdb_dir: Path) -> Iterator[Store]:
    """A store on a fresh database, no migration applied."""
    with fresh_database(chdb_dir) as store:
        yield store


@pytest.fixture
def store(chdb_dir: Path, store_settings: StoreSettings) -> Iterator[Store]:
    """A store on a fresh database with every migration applied."""
    with fresh_database(chdb_dir, store_settings) as store:
        yield store
