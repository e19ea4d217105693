"""Fleet defaults and per-camera overrides of the monitor settings, changed without restarting anything.

A change is a :class:`~core.contracts.CameraConfig` record on the compacted config topic (see
:mod:`core.fleetconfig`): every worker follows that topic and applies it to the cameras it watches
within about a second; ``GET /api/v1/workers`` shows, per worker, the time of the newest record applied.
Reads follow the read access of the other routes; changes need an API token. The models each scope's
cameras go to are part of the same records, changed through :mod:`api.assignments`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Annotated

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from fastapi import APIRouter, Depends, HTTPException, Path, Request, status
from pydantic import BaseModel, Field

from api.auth import TOKEN_RESPONSES, read_access, require_token
from api.guard import guarded
from core.assignment import SITE
from core.contracts import CameraConfig, ModelAssignment, MonitorOverrides, encode_record
from core.fleetconfig import FLEET, LIVE, ConfigFollower, base_settings, effective
from core.kafka import client_options
from core.settings import Settings
from core.topology import create_topics

CameraId = Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$", description="a camera id")]


class ConfigState:
    """The config topic as this API process has read it, and a producer to change it. ``started`` is given
    the follower's consumer once started (:class:`core.fleetconfig.ConfigFollower`)."""

    def __init__(self, settings: Settings, started: Callable[[AIOKafkaConsumer], None] | None = None):
        self.settings = settings
        self.records: dict[str, CameraConfig] = {}
        self.follower = ConfigFollower(settings, self._apply, started)
        self._producer: AIOKafkaProducer | None = None
        self._topics_ready = False
        self._lock = asyncio.Lock()

    def _apply(self, scope: str, record: CameraConfig | None) -> None:
        current = self.records.get(scope)
        if record is None:
            self.records.pop(scope, None)
        elif current is None or record.updated_at >= current.updated_at:
            self.records[scope] = record

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the topic until ``stop``; a failure (broker gone) is raised, for the caller to retry."""
        follow, stopped = asyncio.create_task(self.follower.run()), asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait({follow, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if follow in done:
                follow.result()
        finally:
            for task in (follow, stopped):
                task.cancel()
            await asyncio.gather(follow, stopped, return_exceptions=True)
            if stop.is_set() and self._producer is not None:
                await self._producer.stop()

    async def replace(self, scope: str, overrides: MonitorOverrides, who: str, relearn: bool = False) -> CameraConfig:
        """Publish ``scope``'s new overrides; a relearn request already made is kept, or one is made now, and
        so is its model assignment."""
        current = self.records.get(scope)
        relearn_after = time.time() if relearn else current.relearn_after if current else None
        record = CameraConfig(scope=scope, overrides=overrides, relearn_after=relearn_after, updated_by=who,
                              models=current.models if current else None)  # fmt: skip
        await self.publish(scope, record)
        return record

    async def assign(self, scope: str, models: ModelAssignment | None, who: str) -> CameraConfig | None:
        """Publish ``scope``'s new model assignment (None: removed), its overrides and relearn request kept; a
        scope left with neither gets a tombstone (None is returned)."""
        current = self.records.get(scope)
        record = CameraConfig(scope=scope, overrides=current.overrides if current else MonitorOverrides(),
                              relearn_after=current.relearn_after if current else None, models=models,
                              updated_by=who)  # fmt: skip
        empty = models is None and not record.overrides.model_dump(exclude_none=True) and not record.relearn_after
        await self.publish(scope, None if empty else record)
        return None if empty else record

    async def _producer_ready(self) -> AIOKafkaProducer:
        async with self._lock:
            if not self._topics_ready:
                await create_topics(self.settings)
                self._topics_ready = True
            if self._producer is None:
                self._producer = AIOKafkaProducer(**client_options(self.settings), acks="all")
                await self._producer.start()
            return self._producer

    async def publish(self, scope: str, record: CameraConfig | None) -> None:
        producer = await self._producer_ready()
        value = encode_record(record) if record is not None else None
        await producer.send_and_wait(self.settings.topic("config"), value, key=scope.encode())
        self._apply(scope, record)  # read-your-writes here; the follower confirms it shortly

    async def send(self, topic: str, key: str, record) -> None:
        """Publish ``record`` on topic ``topic`` (its name without the prefix), keyed ``key``."""
        producer = await self._producer_ready()
        await producer.send_and_wait(self.settings.topic(topic), encode_record(record), key=key.encode())


def _state(request: Request) -> ConfigState:
    return request.app.state.config


StateDep = Annotated[ConfigState, Depends(_state)]


class MonitorSettingsView(BaseModel):
    """Monitor settings as a camera sees them."""

    values: dict[str, float | int] = Field(description="every monitor setting, by MonitorSettings name")
    live: list[str] = Field(description="settings applied to a running camera at once; the others apply when "
                            "its references are next learned (POST .../relearn)")  # fmt: skip


class FleetConfigView(BaseModel):
    defaults: MonitorSettingsView = Field(description="the workers' CVOPS_ settings, under every override")
    fleet: CameraConfig | None
    sites: dict[str, CameraConfig] = Field(description="by site name: the sites' model assignments")
    cameras: dict[str, CameraConfig]


class CameraConfigView(BaseModel):
    camera_id: str
    effective: MonitorSettingsView
    fleet: MonitorOverrides | None
    camera: CameraConfig | None


def _view(values) -> MonitorSettingsView:
    return MonitorSettingsView(values=dataclasses.asdict(values), live=sorted(LIVE))


def _who(request: Request) -> str:
    return f"api token via {request.client.host if request.client else 'unknown'}"


# A body is a MonitorOverrides: a few dozen numbers.
MAX_BODY_BYTES = 64 * 1024
TOO_LARGE = {413: {"description": f"a body over {MAX_BODY_BYTES} bytes"}}
router = APIRouter(
    prefix="/api/v1/config",
    tags=["config"],
    responses=TOKEN_RESPONSES,
    route_class=guarded(MAX_BODY_BYTES),
)


@router.get("", response_model=FleetConfigView, dependencies=[Depends(read_access)])
async def get_config(request: Request, state: StateDep) -> FleetConfigView:
    """The fleet's defaults and overrides, and every camera's overrides."""
    return FleetConfigView(
        defaults=_view(base_settings(state.settings)),
        fleet=state.records.get(FLEET),
        sites={k.removeprefix(SITE): v for k, v in sorted(state.records.items()) if k.startswith(SITE)},
        cameras={k: v for k, v in sorted(state.records.items()) if k != FLEET and not k.startswith(SITE)},
    )


@router.get("/cameras/{camera_id}", response_model=CameraConfigView, dependencies=[Depends(read_access)])
async def get_camera_config(camera_id: CameraId, state: StateDep) -> CameraConfigView:
    """The settings one camera is watched with, and where they come from."""
    fleet, camera = state.records.get(FLEET), state.records.get(camera_id)
    values = effective(base_settings(state.settings), fleet.overrides if fleet else None,
                       camera.overrides if camera else None)  # fmt: skip
    return CameraConfigView(
        camera_id=camera_id, effective=_view(values), fleet=fleet.overrides if fleet else None, camera=camera
    )


@router.put("/fleet", response_model=CameraConfig, status_code=status.HTTP_202_ACCEPTED,
            dependencies=[Depends(require_token)], responses=TOO_LARGE)  # fmt: skip
async def put_fleet_config(overrides: MonitorOverrides, request: Request, state: StateDep) -> CameraConfig:
    """Replace the fleet's overrides (fields left out fall back to the workers' settings). Accepted: the
    workers apply it within about a second."""
    return await state.replace(FLEET, overrides, _who(request))


def _not_fleet(camera_id: str) -> None:
    if camera_id == FLEET:
        raise HTTPException(status_code=422, detail=f"'{FLEET}' names the fleet's settings, not a camera")
    if camera_id.startswith(SITE):
        raise HTTPException(status_code=422, detail=f"'{SITE}...' names a site's settings, not a camera")


@router.put("/cameras/{camera_id}", response_model=CameraConfig, status_code=status.HTTP_202_ACCEPTED,
            dependencies=[Depends(require_token)], responses=TOO_LARGE)  # fmt: skip
async def put_camera_config(
    camera_id: CameraId, overrides: MonitorOverrides, request: Request, state: StateDep
) -> CameraConfig:
    """Replace one camera's overrides (fields left out fall back to the fleet's)."""
    _not_fleet(camera_id)
    return await state.replace(camera_id, overrides, _who(request))


@router.delete("/cameras/{camera_id}", status_code=status.HTTP_202_ACCEPTED, dependencies=[Depends(require_token)])
async def delete_camera_config(camera_id: CameraId, state: StateDep) -> dict:
    """Remove one camera's overrides: it follows the fleet's settings again (its model assignment stays)."""
    _not_fleet(camera_id)
    current = state.records.get(camera_id)
    if current is None:
        raise HTTPException(status_code=404, detail=f"camera {camera_id!r} has no overrides")
    if current.models is not None:
        await state.publish(
            camera_id, CameraConfig(scope=camera_id, models=current.models, updated_by=current.updated_by)
        )
    else:
        await state.publish(camera_id, None)
    return {"camera_id": camera_id, "removed": True}


@router.post("/cameras/{camera_id}/relearn", response_model=CameraConfig, status_code=status.HTTP_202_ACCEPTED,
             dependencies=[Depends(require_token)])  # fmt: skip
async def relearn_camera(camera_id: CameraId, request: Request, state: StateDep) -> CameraConfig:
    """Learn the camera's references again from its next frames (after a planned change of view, say): its
    open alerts are resolved, and settings that shape what is learned take effect."""
    _not_fleet(camera_id)
    current = state.records.get(camera_id)
    overrides = current.overrides if current else MonitorOverrides()
    return await state.replace(camera_id, overrides, _who(request), relearn=True)
