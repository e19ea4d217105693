"""The fleet as people describe it and act on it: each camera's inventory (site, tags, notes), and who
acknowledged or silenced an incident or a camera.

Both are records on compacted topics (``cameras``: :class:`~core.contracts.CameraInfo`; ``acknowledgements``:
:class:`~core.contracts.Acknowledgement`), as the monitor settings are on ``config`` (:mod:`api.config`): this
process follows them (:class:`FleetState`) and publishes changes there, so that the incidents processor, the
notifier and the store writer have them too and they survive any restart. Reads follow the read access of the
other routes; changes need an API token, and record who (the name the caller gives) and through what (the
token's hash prefix and the client's address).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Annotated

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.auth import TOKEN_RESPONSES, Credentials, read_access, require_token
from api.dependencies import StoreDep
from api.guard import guarded
from api.tokens import hash_token
from core.compacted import CompactedReader
from core.contracts import Acknowledgement, CameraInfo, ContractError, decode_record, encode_record
from core.inventory import Inventory
from core.kafka import client_options
from core.settings import Settings
from core.silences import Silences
from core.topology import create_topics
from store import Store

ID_PATTERN = r"^[A-Za-z0-9_.:-]+$"
CameraId = Annotated[str, Path(min_length=1, max_length=100, pattern=ID_PATTERN, description="a camera id")]
IncidentId = Annotated[str, Path(min_length=1, max_length=100, pattern=ID_PATTERN, description="an incident id")]


class FleetState:
    """The ``cameras`` and ``acknowledgements`` topics as this API process has read them (:meth:`run` follows
    them), and a producer to change them. ``started(consumer)``, when given, is called once the follower's
    consumer has started (the command line paces its fetches on the development broker)."""

    def __init__(self, settings: Settings, started: Callable[[AIOKafkaConsumer], None] | None = None):
        self.settings = settings
        self.inventory = Inventory()
        self.silences = Silences()
        self.reader = CompactedReader(settings, ["cameras", "acknowledgements"], self._apply, started=started)
        self._producer: AIOKafkaProducer | None = None
        self._topics_ready = False
        self._lock = asyncio.Lock()

    def _apply(self, record: ConsumerRecord) -> None:
        key = (record.key or b"").decode("utf-8", "replace")
        if record.topic == self.settings.topic("cameras"):
            info = decode_record(CameraInfo, record.value) if record.value is not None else None
            if info is not None and key != f"{info.source}:{info.camera_id}":
                raise ContractError("key_mismatch", f"the record of {info.source}:{info.camera_id} is keyed {key!r}")
            self.inventory.apply(key, info)
        else:
            self.silences.apply(key, decode_record(Acknowledgement, record.value) if record.value is not None else None)

    async def run(self, stop: asyncio.Event) -> None:
        """Follow both topics until ``stop``; a failure (broker gone) is raised, for the caller to retry."""
        try:
            await self.reader.follow(stop)
        finally:
            if stop.is_set() and self._producer is not None:
                await self._producer.stop()

    async def publish(self, record: CameraInfo | Acknowledgement) -> None:
        """Publish ``record`` on its topic, and apply it here at once (the follower confirms it shortly)."""
        async with self._lock:
            if not self._topics_ready:
                await create_topics(self.settings)
                self._topics_ready = True
            if self._producer is None:
                self._producer = AIOKafkaProducer(**client_options(self.settings), acks="all")
                await self._producer.start()
        if isinstance(record, CameraInfo):
            key = f"{record.source}:{record.camera_id}"
            await self._producer.send_and_wait(self.settings.topic("cameras"), encode_record(record), key=key.encode())
            self.inventory.apply(key, record)
        else:
            topic = self.settings.topic("acknowledgements")
            await self._producer.send_and_wait(topic, encode_record(record), key=record.key.encode())
            self.silences.apply(record.key, record)


def _state(request: Request) -> FleetState:
    return request.app.state.fleet


StateDep = Annotated[FleetState, Depends(_state)]


# --- the inventory ----------------------------------------------------------------------------------------------


class CameraInventory(BaseModel):
    """What a camera is: its site, tags, notes and gateway (the operator's fields over the gateway's), what each
    source said, and the acknowledgement and silence of the camera in force."""

    camera_id: str
    site: str | None
    tags: dict[str, str]
    notes: str | None
    gateway: str | None
    gateway_record: CameraInfo | None = Field(description="what its gateway declared (--site, --tag)")
    operator_record: CameraInfo | None = Field(description="what was set through the API")
    acknowledged: Acknowledgement | None
    silenced: Acknowledgement | None


_INFO = CameraInfo.model_fields


class InventoryChange(BaseModel):
    """A camera's site, tags and notes as an operator sets them: a field left out (or null) falls back to what
    its gateway declared; tags are merged over the gateway's."""

    model_config = ConfigDict(extra="forbid")

    site: str | None = _INFO["site"]
    tags: dict[str, str] = _INFO["tags"]
    notes: str | None = _INFO["notes"]

    _tags = field_validator("tags")(CameraInfo._short_tags.__func__)  # type: ignore[attr-defined]


def camera_inventory(state: FleetState, camera_id: str, now: float, known: bool = False) -> CameraInventory | None:
    """One camera's inventory as the API shows it; None for a camera nobody described, unless ``known`` (then
    its fields are empty)."""
    records = state.inventory.records
    gateway, operator = records.get(f"gateway:{camera_id}"), records.get(f"operator:{camera_id}")
    described = gateway is not None or operator is not None
    if not described and not known:
        return None
    empty = {"site": None, "tags": {}, "notes": None, "gateway": None}
    merged = state.inventory.cameras.get(camera_id, empty) if described else empty
    return CameraInventory(
        camera_id=camera_id, site=merged["site"], tags=merged["tags"], notes=merged["notes"],
        gateway=merged["gateway"], gateway_record=gateway, operator_record=operator,
        acknowledged=state.silences.holding("acknowledge", "camera", camera_id, now),
        silenced=state.silences.holding("silence", "camera", camera_id, now),
    )  # fmt: skip


def fleet_inventory(state: FleetState, now: float, site: str | None, tag: str | None) -> list[CameraInventory]:
    """Every described camera, by id; ``site`` and ``tag`` (``key=value``) narrow it when given."""
    out = []
    for camera_id in sorted(state.inventory.cameras):
        inv = camera_inventory(state, camera_id, now)
        if inv is None or (site is not None and inv.site != site):
            continue
        if tag is not None and inv.tags.get(tag.partition("=")[0]) != tag.partition("=")[2]:
            continue
        out.append(inv)
    return out


# Bodies are a few names and notes.
MAX_BODY_BYTES = 16 * 1024
TOO_LARGE = {413: {"description": f"a body over {MAX_BODY_BYTES} bytes"}}
router = APIRouter(tags=["fleet"], responses=TOKEN_RESPONSES, route_class=guarded(MAX_BODY_BYTES))
reads = {"dependencies": [Depends(read_access)]}
writes = {"dependencies": [Depends(require_token)], "status_code": status.HTTP_202_ACCEPTED, "responses": TOO_LARGE}
NOT_FOUND = {404: {"description": "unknown incident or camera, or nothing in force to lift"}}
acts = {**writes, "response_model": Acknowledgement, "responses": {**TOO_LARGE, **NOT_FOUND}}
By = Annotated[str, Query(min_length=1, max_length=100, description="who lifts it")]


@router.get("/api/v1/inventory", response_model=list[CameraInventory], **reads)
async def inventory(
    state: StateDep,
    site: Annotated[str | None, Query(min_length=1, max_length=100, description="the cameras of this site")] = None,
    tag: Annotated[
        str | None, Query(min_length=3, max_length=160, pattern=r"^[^=]+=.*$", description="key=value")
    ] = None,
) -> list[CameraInventory]:
    """Every camera a gateway or an operator described, with its site, tags, notes and gateway: the fleet to
    filter or group by site and tag."""
    return fleet_inventory(state, time.time(), site, tag)


@router.get("/api/v1/cameras/{camera_id}/inventory", response_model=CameraInventory,
            responses={404: {"description": "a camera nobody described and that sent no frame"}}, **reads)  # fmt: skip
def get_camera_inventory(camera_id: CameraId, store: StoreDep, state: StateDep) -> CameraInventory:
    """One camera's site, tags, notes and gateway, what each source said, and its acknowledgement and silence
    in force. A camera that sent frames but that nobody described has empty fields."""
    inv = camera_inventory(state, camera_id, time.time(), known=_seen(store, camera_id))
    if inv is None:
        raise HTTPException(status_code=404, detail=f"unknown camera {camera_id!r}: no gateway declared it, no "
                            "operator described it and it sent no frame")  # fmt: skip
    return inv


@router.put("/api/v1/cameras/{camera_id}/inventory", response_model=CameraInfo, **writes)
async def put_camera_inventory(camera_id: CameraId, change: InventoryChange, state: StateDep) -> CameraInfo:
    """Set a camera's site, tags and notes (they replace what an operator set before). Published on the
    ``cameras`` topic: incidents group by the new site from the next alert on."""
    record = CameraInfo(camera_id=camera_id, source="operator", **change.model_dump())
    await state.publish(record)
    return record


# --- acknowledgements and silences ------------------------------------------------------------------------------


class AcknowledgeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: str = Field(min_length=1, max_length=100, description="who: a name people know")
    comment: str = Field("", max_length=1000)
    for_s: float | None = Field(None, gt=0, le=90 * 86_400, description="seconds it lasts; none: until lifted "
                                "(an incident's acknowledgement ends with it anyway)")  # fmt: skip


class SilenceRequest(AcknowledgeRequest):
    for_s: float = Field(gt=0, le=90 * 86_400, description="seconds the silence lasts")  # type: ignore[assignment]


def _via(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str:
    """What the server knows of a caller: a prefix of its token's SHA-256 (never the token) and its address."""
    token = hash_token(credentials.credentials)[:8] if credentials is not None else "none"
    return f"api token {token} from {request.client.host if request.client else 'unknown'}"


def _incident_known(store: Store, incident_id: str) -> None:
    if not store.query("SELECT 1 FROM incidents WHERE incident_id = {id:String} LIMIT 1", {"id": incident_id}):
        raise HTTPException(status_code=404, detail=f"unknown incident {incident_id!r}")


def _seen(store: Store, camera_id: str) -> bool:
    """Whether the store holds frames of ``camera_id``."""
    return bool(store.query("SELECT 1 FROM cameras WHERE camera_id = {camera:String} LIMIT 1", {"camera": camera_id}))


def _camera_known(store: Store, state: FleetState, camera_id: str) -> None:
    if camera_id not in state.inventory.cameras and not _seen(store, camera_id):
        raise HTTPException(status_code=404, detail=f"unknown camera {camera_id!r}")


async def _set(
    state: FleetState, action: str, target: str, target_id: str, body: AcknowledgeRequest, via: str
) -> Acknowledgement:
    now = time.time()
    until = now + body.for_s if body.for_s is not None else None
    record = Acknowledgement(action=action, target=target, target_id=target_id, by=body.by, via=via, at=now,
                             until=until, comment=body.comment)  # fmt: skip
    await state.publish(record)
    return record


async def _lift(state: FleetState, action: str, target: str, target_id: str, by: str, via: str) -> Acknowledgement:
    now = time.time()
    if state.silences.holding(action, target, target_id, now) is None:
        raise HTTPException(status_code=404, detail=f"{target} {target_id!r} has no {action} in force")
    record = Acknowledgement(action=action, target=target, target_id=target_id, by=by, via=via, at=now, until=now)
    await state.publish(record)
    return record


@router.post("/api/v1/incidents/{incident_id}/acknowledge", **acts)
async def acknowledge_incident(incident_id: IncidentId, body: AcknowledgeRequest, request: Request, store: StoreDep,
                               state: StateDep, credentials: Credentials) -> Acknowledgement:  # fmt: skip
    """Acknowledge an incident: someone is on it. Its repeats (cameras that join) are no longer sent; its resolve
    is."""
    await asyncio.to_thread(_incident_known, store, incident_id)
    return await _set(state, "acknowledge", "incident", incident_id, body, _via(request, credentials))


@router.post("/api/v1/incidents/{incident_id}/silence", **acts)
async def silence_incident(incident_id: IncidentId, body: SilenceRequest, request: Request, store: StoreDep,
                           state: StateDep, credentials: Credentials) -> Acknowledgement:  # fmt: skip
    """Silence an incident for ``for_s`` seconds: nothing of it is sent meanwhile."""
    await asyncio.to_thread(_incident_known, store, incident_id)
    return await _set(state, "silence", "incident", incident_id, body, _via(request, credentials))


@router.delete("/api/v1/incidents/{incident_id}/silence", **acts)
async def unsilence_incident(incident_id: IncidentId, by: By, request: Request, state: StateDep,
                             credentials: Credentials) -> Acknowledgement:  # fmt: skip
    """End an incident's silence now."""
    return await _lift(state, "silence", "incident", incident_id, by, _via(request, credentials))


@router.delete("/api/v1/incidents/{incident_id}/acknowledge", **acts)
async def unacknowledge_incident(incident_id: IncidentId, by: By, request: Request, state: StateDep,
                                 credentials: Credentials) -> Acknowledgement:  # fmt: skip
    """Take back an incident's acknowledgement: its repeats are sent again."""
    return await _lift(state, "acknowledge", "incident", incident_id, by, _via(request, credentials))


@router.post("/api/v1/cameras/{camera_id}/acknowledge", **acts)
async def acknowledge_camera(camera_id: CameraId, body: AcknowledgeRequest, request: Request, store: StoreDep,
                             state: StateDep, credentials: Credentials) -> Acknowledgement:  # fmt: skip
    """Acknowledge a camera: the repeats of incidents of this camera alone are no longer sent."""
    await asyncio.to_thread(_camera_known, store, state, camera_id)
    return await _set(state, "acknowledge", "camera", camera_id, body, _via(request, credentials))


@router.post("/api/v1/cameras/{camera_id}/silence", **acts)
async def silence_camera(camera_id: CameraId, body: SilenceRequest, request: Request, store: StoreDep,
                         state: StateDep, credentials: Credentials) -> Acknowledgement:  # fmt: skip
    """Silence a camera for ``for_s`` seconds (under maintenance, say): its alerts are still recorded, but
    incidents of this camera alone send nothing."""
    await asyncio.to_thread(_camera_known, store, state, camera_id)
    return await _set(state, "silence", "camera", camera_id, body, _via(request, credentials))


@router.delete("/api/v1/cameras/{camera_id}/silence", **acts)
async def unsilence_camera(camera_id: CameraId, by: By, request: Request, state: StateDep,
                           credentials: Credentials) -> Acknowledgement:  # fmt: skip
    """End a camera's silence now."""
    return await _lift(state, "silence", "camera", camera_id, by, _via(request, credentials))


@router.delete("/api/v1/cameras/{camera_id}/acknowledge", **acts)
async def unacknowledge_camera(camera_id: CameraId, by: By, request: Request, state: StateDep,
                               credentials: Credentials) -> Acknowledgement:  # fmt: skip
    """Take back a camera's acknowledgement."""
    return await _lift(state, "acknowledge", "camera", camera_id, by, _via(request, credentials))


@router.get("/api/v1/acknowledgements", response_model=list[Acknowledgement], **reads)
async def acknowledgements(
    state: StateDep,
    ended: Annotated[bool, Query(description="lifted and expired ones too (the newest of each target)")] = False,
) -> list[Acknowledgement]:
    """The acknowledgements and silences in force, newest first: who, when, until when."""
    now = time.time()
    held = [r for r in state.silences.records.values() if ended or r.holds(now)]
    return sorted(held, key=lambda r: (-r.at, r.key))
