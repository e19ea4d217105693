"""The HTTP API: health, cameras, alerts (stored and live), incidents, the inventory, acknowledgements and
silences, analysts' SQL, workers, models and pipeline counts, and the dashboard that shows them
(``/dashboard/``, static files in ``api/dashboard``). FastAPI; the OpenAPI schema is at /openapi.json, its
pages at /docs and /redoc: reads like the others, so with ``CVOPS_API_READ_PUBLIC=false`` they need a token
too, and so does ``/metrics``. Routes live by subject in :mod:`api.cameras`, :mod:`api.alerts`,
:mod:`api.incidents`, :mod:`api.fleet`, :mod:`api.sql`; who may call what in :mod:`api.auth`, checked before
a body is read (:mod:`api.guard`); the API's own settings in :mod:`api.settings`.

With the embedded store (a chdb DSN) this process also runs the store writer, since one process owns a
chdb directory; with a ClickHouse server the writer can run on its own (``cvops store-writer``) and
``CVOPS_API_STORE_WRITER=false`` turns it off here.

The API depends on the core and the store only, never on the worker (``streams``): what the development broker
needs of the API's consumers comes in from the command line (``slow_consumer_started``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from api import alerts, cameras, config, evidence, fleet, incidents, pipeline, prometheus, sql
from api.assignments import router as assignments_router
from api.auth import TOKEN_RESPONSES, read_access
from api.live import AlertFeed
from api.settings import ApiSettings
from core.directory import WorkerDirectory
from core.settings import Settings, get_settings
from core.supervise import keep_running
from store import connect
from store.schema import migrate
from store.settings import StoreSettings
from store.writer import StoreWriter

log = logging.getLogger("cvops.api")

DASHBOARD_DIR = Path(__file__).parent / "dashboard"
ConsumerStarted = Callable[[AIOKafkaConsumer], None]


@asynccontextmanager
async def _lifespan(
    settings: Settings, api_settings: ApiSettings, slow_consumer_started: ConsumerStarted | None, app: FastAPI
):
    """The store (migrated), and the API's background tasks: the worker directory, the live alert feed, the
    config follower, the inventory and acknowledgements follower and, with an embedded store, the store writer;
    each kept running until shutdown. ``slow_consumer_started`` is given the consumers of the slow topics (worker
    statuses, config, inventory and acknowledgements) once started."""
    store = await asyncio.to_thread(connect, settings.store_dsn, reader_dsn=StoreSettings().store_sql_dsn)
    await asyncio.to_thread(migrate, store, settings.ttl_days)
    if store.reader_dsn:
        await asyncio.to_thread(store.reader)  # a wrong analysts' DSN fails the start, not every query
    app.state.store = store
    app.state.signals = await asyncio.to_thread(cameras.series_signals, store)
    app.state.offsets = pipeline.TopicOffsets(settings)
    app.state.writer = None
    app.state.workers = WorkerDirectory(settings, started=slow_consumer_started)
    app.state.alert_feed = AlertFeed(settings, api_settings.api_sse_queue, api_settings.api_sse_max_subscribers)
    app.state.config = config.ConfigState(settings, started=slow_consumer_started)
    app.state.fleet = fleet.FleetState(settings, started=slow_consumer_started)
    stop = asyncio.Event()
    loops = [(app.state.workers, "worker directory", 10), (app.state.alert_feed, "live alert feed", 10),
             (app.state.config, "config follower", 10), (app.state.fleet, "fleet follower", 10)]  # fmt: skip
    if settings.api_store_writer:
        app.state.writer = StoreWriter(settings, store)
        loops.append((app.state.writer, "store writer", 30))
    tasks = [
        (asyncio.create_task(keep_running(lambda part=part: part.run(stop), name, stop), name=name), wait_s)
        for part, name, wait_s in loops
    ]
    try:
        yield
    finally:
        stop.set()
        for task, wait_s in tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, wait_s)
        await app.state.offsets.close()
        store.close()


def create_app(
    settings: Settings | None = None,
    api_settings: ApiSettings | None = None,
    slow_consumer_started: ConsumerStarted | None = None,
) -> FastAPI:
    """The API. ``slow_consumer_started(consumer)``, when given, is called with the worker directory's, the
    config follower's and the fleet follower's consumers once started: the command line passes the development
    broker's pacing of slow topics (:func:`streams.devbroker.fetch_pacing.pace_slow_topic`)."""
    settings = settings or get_settings()
    api_settings = api_settings or ApiSettings()
    api_settings.token_hashes  # noqa: B018  (fail at start, not at the first request, on a malformed hash)

    app = FastAPI(
        title="cvops",
        version="0.1.0",
        summary="Streaming inference and monitoring for camera fleets.",
        lifespan=partial(_lifespan, settings, api_settings, slow_consumer_started),
        # Served below as reads, behind the token when reads are closed.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.api_settings = api_settings
    reads = {"dependencies": [Depends(read_access)], "responses": TOKEN_RESPONSES}

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"detail": f"internal error: {type(exc).__name__}"})

    @app.get("/openapi.json", include_in_schema=False, **reads)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, **reads)
    async def docs(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=f"{request.scope.get('root_path', '')}/openapi.json", title=app.title)

    @app.get("/redoc", include_in_schema=False, **reads)
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(openapi_url=f"{request.scope.get('root_path', '')}/openapi.json", title=app.title)

    app.include_router(pipeline.router)
    app.include_router(cameras.router)
    app.include_router(alerts.router)
    app.include_router(sql.router)
    app.include_router(config.router)
    app.include_router(evidence.router)
    app.include_router(incidents.router)
    app.include_router(fleet.router)
    app.include_router(assignments_router)
    prometheus.install(app)

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse("dashboard/", status_code=307)

    # The dashboard: static files only (vanilla JS and a vendored uPlot), reading the JSON routes above.
    app.mount("/dashboard", StaticFiles(directory=DASHBOARD_DIR, html=True), name="dashboard")
    return app


def run_api(settings: Settings, slow_consumer_started: ConsumerStarted | None = None) -> None:
    import uvicorn

    from core.topology import create_topics

    asyncio.run(create_topics(settings))
    uvicorn.run(
        create_app(settings, slow_consumer_started=slow_consumer_started),
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=5,  # live alert streams never end by themselves: do not wait on them forever
    )
