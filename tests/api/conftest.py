"""One API server for the package: the real app under uvicorn in a thread of this process, on the real broker
(``bootstrap``) and a real embedded ClickHouse engine in a temporary directory.

In-process because chdb runs one engine per process: the tests seed rows through the app's own store. The
fixture is package-scoped, so the engine closes before other packages open theirs. Tests change the API's
settings (``configure``) or clock (``now``), and keep apart by camera ids.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from api.app import create_app
from api.dependencies import get_now
from api.settings import ApiSettings
from api.tokens import hash_token
from core.settings import Settings
from core.topology import create_topics
from store import Store
from store.writer import SINKS, alert_row, metrics_row
from tests.conftest import free_port

TOKEN = "analyst-token-for-tests"


@pytest.fixture(scope="package")
def api_config(bootstrap: str, tmp_path_factory) -> tuple[Settings, ApiSettings]:
    settings = Settings(
        _env_file=None,
        kafka_bootstrap=bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        frames_partitions=2,
        store_dsn=f"chdb://{tmp_path_factory.mktemp('api-chdb')}?database=api",
        api_port=free_port(),
        api_store_writer=False,
    )
    api_settings = ApiSettings(_env_file=None, api_tokens=hash_token(TOKEN), api_sse_heartbeat_s=0.5)
    return settings, api_settings


@pytest.fixture(scope="package")
def app(api_config) -> Iterator[FastAPI]:
    settings, api_settings = api_config
    asyncio.run(create_topics(settings))
    app = create_app(settings, api_settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=settings.api_port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name="api-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the API did not start")
        time.sleep(0.1)
    yield app
    server.should_exit = True
    thread.join(30)


@pytest.fixture
def client(app: FastAPI, api_config) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{api_config[0].api_port}", timeout=30) as c:
        yield c


@pytest.fixture
def store(app: FastAPI) -> Store:
    return app.state.store


@pytest.fixture
def configure(app: FastAPI, api_config):
    """``configure(**changes)``: the API's settings with ``changes`` until the test ends."""

    def apply(**changes) -> None:
        # On app.state, not as a dependency override: access is also checked before a body is read (api.guard),
        # outside FastAPI's dependencies.
        app.state.api_settings = api_config[1].model_copy(update=changes)

    yield apply
    app.state.api_settings = api_config[1]


@pytest.fixture
def now(app: FastAPI) -> Iterator[float]:
    """The API's clock, frozen at the middle of the current minute (unix s)."""
    frozen = float(int(time.time()) // 60 * 60 + 30)
    app.dependency_overrides[get_now] = lambda: frozen
    yield frozen
    app.dependency_overrides.pop(get_now, None)


@pytest.fixture
def camera() -> str:
    """A camera id of this test alone."""
    return f"cam-{uuid.uuid4().hex[:8]}"


def auth(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


def seed(store: Store, metrics=(), alerts=()) -> None:
    """Insert records as the store writer does (its row functions and columns)."""
    if metrics:
        store.insert("frame_metrics", [metrics_row(m) for m in metrics], SINKS["metrics"].columns)
    if alerts:
        store.insert("alerts", [alert_row(a) for a in alerts], SINKS["alerts"].columns)
