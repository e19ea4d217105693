"""The pipeline as a whole: health, the stream workers, the model registry and the records in each topic and
table (what the demo's live summary shows)."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.auth import TOKEN_RESPONSES, read_access
from api.dependencies import StoreDep
from core.contracts import WorkerStatus
from core.directory import WorkerDirectory
from core.kafka import client_options
from core.settings import Settings

router = APIRouter()
reads = {"dependencies": [Depends(read_access)], "responses": TOKEN_RESPONSES}


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
    workers: list[str] = Field(description="ids of the live workers running this model (as a champion or a challenger)")


@router.get("/health/live", response_model=Health, tags=["health"])
async def live() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/health/ready", response_model=Health, tags=["health"], responses={503: {"model": Health}})
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


@router.get("/api/v1/workers", response_model=list[WorkerView], tags=["workers"], **reads)
async def workers(request: Request) -> list[WorkerView]:
    """Every stream worker seen in the last hour: its model, providers in use, partitions, throughput."""
    directory: WorkerDirectory = request.app.state.workers
    alive = {w.worker_id for w in directory.alive()}
    return [WorkerView(alive=w.worker_id in alive, status=w) for w in directory.latest.values()]


@router.get("/api/v1/models", response_model=list[ModelView], tags=["models"], **reads)
def models(request: Request) -> list[ModelView]:
    """The model registry, and which live workers run each model."""
    from models import discover

    running: dict[str, list[str]] = {}
    for w in request.app.state.workers.alive():
        for ref in w.models or [f"{w.model_name}@{w.model_version}"]:  # every model it serves
            running.setdefault(ref, []).append(w.worker_id)
    return [
        ModelView(**s.summary(), workers=running.get(s.ref, []))
        for s in discover(request.app.state.settings.model_dirs)
    ]


@router.get("/api/v1/counts", response_model=PipelineCounts, tags=["pipeline"], **reads)
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
