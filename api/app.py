"""The HTTP API: health, cameras, alerts (stored and live), analysts' SQL, workers, models and pipeline counts,
and the dashboard that shows them (``/dashboard/``, static files in ``api/dashboard``). FastAPI; the OpenAPI
schema is at /openapi.json, its pages at /docs and /redoc: reads like the others, so with
``CVOPS_API_READ_PUBLIC=false`` they need a token too, and so does ``/metrics``. Routes live by subject in
:mod:`api.cameras`, :mod:`api.alerts`, :mod:`api.sql`; who may call what in :mod:`api.auth`, checked before
a body is read (:mod:`api.guard`); the API's own settings in :mod:`api.settings`.

With the embedded store (a chdb DSN) this process also runs the store writer, since one process owns a
chdb directory; with a ClickHouse server the writer can run on its own (``cvops store-writer``) and
``CVOPS_API_STORE_WRITER=false`` turns it off here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import asynccontextmanager
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from api import alerts, cameras, config, evidence, prometheus, sql
from api.auth import TOKEN_RESPONSES, read_access
from api.dependencies import StoreDep
from api.live import AlertFeed
from api.settings import ApiSettings
from core.contracts import WorkerStatus
from core.kafka import client_options
from core.settings import Settings, get_settings
from core.supervise import keep_running
from store import connect
from store.schema import migrate
from store.settings import StoreSettings
from store.writer import StoreWriter
from streams.devbroker import fetch_pacing
from streams.directory import WorkerDirectory

log = logging.getLogger("cvops.api")

DASHBOARD_DIR = Path(__file__).parent / "dashboard"


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}


class PipelineCounts(BaseModel):
    """Counts since the topics were created (topics) and rows held (store)."""

    frames_published: int
    predictions: int
    alerts: int
    dead_letters: int
    metric_rows: int
    prediction_rows: int
    detections: int
    alert_rows: int
    dead_letter_rows: int
    store_rows_written: dict[str, int]
    store_failed_inserts: int


class TopicOffsets:
    """End offsets of the cvops topics, through a consumer that joins no group."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.consumer: AIOKafkaConsumer | None = None

    async def totals(self, names: list[str]) -> dict[str, int]:
        if self.consumer is None:
            self.consumer = AIOKafkaConsumer(**client_options(self.settings), request_timeout_ms=5000)
            await self.consumer.start()
        tps = []
        for name in names:
            parts = self.consumer.partitions_for_topic(self.settings.topic(name))
            if parts is None:
                await self.consumer._client.force_metadata_update()
                parts = self.consumer.partitions_for_topic(self.settings.topic(name)) or set()
            tps += [TopicPartition(self.settings.topic(name), p) for p in parts]
        ends = await self.consumer.end_offsets(tps) if tps else {}
        totals = dict.fromkeys(names, 0)
        for tp, end in ends.items():
            totals[tp.topic.removeprefix(self.settings.topic_prefix)] += end
        return totals

    async def close(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()


class WorkerView(BaseModel):
    alive: bool
    status: WorkerStatus


class ModelView(BaseModel):
    name: str
    version: str
    task: str
    family: str
    licence: str
    source: dict | str
    sha256: str
    input: dict
    labels: int
    workers: list[str] = Field(description="ids of the live workers running this model")


def create_app(settings: Settings | None = None, api_settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    api_settings = api_settings or ApiSettings()
    api_settings.token_hashes  # noqa: B018  (fail at start, not at the first request, on a malformed hash)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        store = await asyncio.to_thread(connect, settings.store_dsn, reader_dsn=StoreSettings().store_sql_dsn)
        await asyncio.to_thread(migrate, store, settings.ttl_days)
        if store.reader_dsn:
            await asyncio.to_thread(store.reader)  # a wrong analysts' DSN fails the start, not every query
        app.state.store = store
        app.state.signals = await asyncio.to_thread(cameras.series_signals, store)
        app.state.offsets = TopicOffsets(settings)
        app.state.writer = None
        app.state.workers = WorkerDirectory(settings)
        app.state.alert_feed = AlertFeed(settings, api_settings.api_sse_queue, api_settings.api_sse_max_subscribers)
        app.state.config = config.ConfigState(
            settings, started=lambda consumer: fetch_pacing.pace(consumer, fetch_pacing.SLOW_TOPIC_PAUSE_MS)
        )
        stop = asyncio.Event()
        task = None
        directory = asyncio.create_task(keep_running(lambda: app.state.workers.run(stop), "worker directory", stop))
        feed = asyncio.create_task(keep_running(lambda: app.state.alert_feed.run(stop), "live alert feed", stop))
        follower = asyncio.create_task(keep_running(lambda: app.state.config.run(stop), "config follower", stop))
        if settings.api_store_writer:
            app.state.writer = StoreWriter(settings, store)
            task = asyncio.create_task(
                keep_running(lambda: app.state.writer.run(stop), "store writer", stop), name="store-writer"
            )
        try:
            yield
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(directory, 10)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(feed, 10)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(follower, 10)
            if task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 30)
            await app.state.offsets.close()
            store.close()

    app = FastAPI(
        title="cvops",
        version="0.1.0",
        summary="Streaming inference and monitoring for camera fleets.",
        lifespan=lifespan,
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

    @app.get("/health/live", response_model=Health, tags=["health"])
    async def live() -> Health:
        """The process is up."""
        return Health(status="ok")

    @app.get("/health/ready", response_model=Health, tags=["health"], responses={503: {"model": Health}})
    async def ready(request: Request, store: StoreDep):
        """Broker and store both answer. 503 with the failing check otherwise."""
        checks = {"store": "ok" if await asyncio.to_thread(store.ping) else "unreachable"}
        try:
            await asyncio.wait_for(request.app.state.offsets.totals(["frames"]), 5)
            checks["broker"] = "ok"
        except Exception as exc:
            checks["broker"] = f"unreachable: {type(exc).__name__}"
        ok = all(v == "ok" for v in checks.values())
        checks["workers"] = f"{len(request.app.state.workers.alive())} alive"
        body = Health(status="ok" if ok else "unavailable", checks=checks)
        return JSONResponse(status_code=200 if ok else 503, content=body.model_dump())

    @app.get("/api/v1/workers", response_model=list[WorkerView], tags=["workers"], **reads)
    async def workers(request: Request) -> list[WorkerView]:
        """Every stream worker seen in the last hour: its model, providers in use, partitions, throughput."""
        directory: WorkerDirectory = request.app.state.workers
        alive = {w.worker_id for w in directory.alive()}
        return [WorkerView(alive=w.worker_id in alive, status=w) for w in directory.latest.values()]

    @app.get("/api/v1/models", response_model=list[ModelView], tags=["models"], **reads)
    def models(request: Request) -> list[ModelView]:
        """The model registry, and which live workers run each model."""
        from models import discover

        running: dict[str, list[str]] = {}
        for w in request.app.state.workers.alive():
            running.setdefault(f"{w.model_name}@{w.model_version}", []).append(w.worker_id)
        return [ModelView(**s.summary(), workers=running.get(s.ref, [])) for s in discover(settings.model_dirs)]

    @app.get("/api/v1/counts", response_model=PipelineCounts, tags=["pipeline"], **reads)
    async def counts(request: Request, store: StoreDep) -> PipelineCounts:
        """Records in each topic and rows in each table: what the demo's live summary shows."""
        topics = await request.app.state.offsets.totals(["frames", "predictions", "alerts", "deadletters"])
        rows = await asyncio.to_thread(
            store.query,
            """
            SELECT (SELECT count() FROM frame_metrics FINAL), (SELECT count() FROM predictions FINAL),
                   (SELECT sum(length(detections.label)) FROM predictions FINAL),
                   (SELECT count() FROM alerts FINAL), (SELECT count() FROM dead_letters FINAL)
            """,
        )
        metric_rows, prediction_rows, detections, alert_rows, dead_rows = rows[0]
        writer = request.app.state.writer
        return PipelineCounts(
            frames_published=topics["frames"],
            predictions=topics["predictions"],
            alerts=topics["alerts"],
            dead_letters=topics["deadletters"],
            metric_rows=metric_rows,
            prediction_rows=prediction_rows,
            detections=detections or 0,
            alert_rows=alert_rows,
            dead_letter_rows=dead_rows,
            store_rows_written=dict(writer.rows_written) if writer else {},
            store_failed_inserts=writer.failed_inserts if writer else 0,
        )

    app.include_router(cameras.router)
    app.include_router(alerts.router)
    app.include_router(sql.router)
    app.include_router(config.router)
    app.include_router(evidence.router)
    prometheus.install(app)

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse("dashboard/", status_code=307)

    # The dashboard: static files only (vanilla JS and a vendored uPlot), reading the JSON routes above.
    app.mount("/dashboard", StaticFiles(directory=DASHBOARD_DIR, html=True), name="dashboard")
    return app


def run_api(settings: Settings) -> None:
    import uvicorn

    from core.topology import create_topics

    asyncio.run(create_topics(settings))
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=5,  # live alert streams never end by themselves: do not wait on them forever
    )
