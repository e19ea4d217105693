"""Incidents across cameras: the list (open first) and one incident with its member cameras and their alerts.

Read from the store's ``incidents`` table (one row per raise, join and resolve; an incident's state is its
newest row) and ``alerts``; each camera's inventory and the acknowledgements and silences in force come from
the topics this process follows (:class:`api.fleet.FleetState`). Acknowledging and silencing are in
:mod:`api.fleet`.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from api.alerts import ALERT_COLUMNS
from api.auth import TOKEN_RESPONSES, read_access
from api.dependencies import StoreDep
from api.fleet import CameraInventory, FleetState, IncidentId, StateDep, camera_inventory
from core.contracts import Acknowledgement, Alert, AlertType
from store import Store

Kind = Literal["environment", "upstream", "model", "device"]

router = APIRouter(tags=["incidents"], dependencies=[Depends(read_access)], responses=TOKEN_RESPONSES)


class IncidentSummary(BaseModel):
    """An incident as its newest record left it, and the acknowledgement and silence of it in force."""

    incident_id: str
    kind: Kind
    scope: str = Field(description="site:<name>, tag:<k=v>, gateway:<id>, model:<name@version> or camera:<id>")
    site: str = Field(description="the site all its cameras share; empty when they do not")
    type: AlertType
    signal: str
    direction: Literal["up", "down", "changed"]
    status: Literal["raised", "joined", "resolved"] = Field(description="its newest record's")
    open: bool
    cameras: list[str]
    opened_at: float = Field(description="unix s")
    resolved_at: float | None = Field(description="unix s; null while open")
    changed_at: float = Field(description="unix s of its newest record")
    summary: str
    acknowledged: Acknowledgement | None = None
    silenced: Acknowledgement | None = None


class IncidentChange(BaseModel):
    status: Literal["raised", "joined", "resolved"]
    changed_at: float = Field(description="unix s")
    alert_ids: list[str] = Field(description="the alerts it is about: all on a raise, the newcomers on a join")


class MemberCamera(BaseModel):
    camera_id: str
    inventory: CameraInventory | None = Field(description="its site, tags, notes; null when nobody described it")
    alerts: list[Alert] = Field(description="its member alerts' records (raise, resolve), oldest first")


class IncidentDetail(IncidentSummary):
    members: dict[str, str] = Field(description="member alert id -> camera id")
    history: list[IncidentChange] = Field(description="its records, oldest first")
    member_cameras: list[MemberCamera]


# The newest row of each incident: at one instant a resolve wins over a join. Columns are qualified, since the
# aliases shadow them.
_LATEST = """
SELECT incident_id, any(incidents.kind) AS kind, any(incidents.scope) AS scope,
       argMax(incidents.site, incidents.changed_at) AS site, any(incidents.type) AS type,
       any(incidents.signal) AS signal, any(incidents.direction) AS direction,
       argMax(incidents.status, (incidents.changed_at, incidents.status = 'resolved')) AS status,
       argMax(incidents.cameras, (incidents.changed_at, incidents.status = 'resolved')) AS cameras,
       argMax(incidents.members, (incidents.changed_at, incidents.status = 'resolved')) AS members,
       toUnixTimestamp64Milli(any(incidents.opened_at)) / 1000 AS opened_at,
       toUnixTimestamp64Milli(max(incidents.resolved_at)) / 1000 AS resolved_at,
       toUnixTimestamp64Milli(max(incidents.changed_at)) / 1000 AS changed_at,
       argMax(incidents.summary, (incidents.changed_at, incidents.status = 'resolved')) AS summary
FROM incidents FINAL
WHERE ({id:Nullable(String)} IS NULL OR incidents.incident_id = {id:Nullable(String)})
  AND ({kind:Nullable(String)} IS NULL OR incidents.kind = {kind:Nullable(String)})
GROUP BY incident_id
HAVING ({site:Nullable(String)} IS NULL OR site = {site:Nullable(String)})
   AND ({open:Nullable(Bool)} IS NULL OR (resolved_at IS NULL) = {open:Nullable(Bool)})
ORDER BY resolved_at IS NOT NULL, opened_at DESC, incident_id
LIMIT {limit:UInt32} OFFSET {offset:UInt64}
"""


def query_incidents(
    store: Store,
    incident_id: str | None = None,
    status: Literal["open", "resolved"] | None = None,
    site: str | None = None,
    kind: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict]:
    """The newest state of each incident (open ones first, then the newest opened), filtered by what is not None;
    each a dict of :class:`IncidentSummary`'s stored fields and ``members``."""
    rows = store.query_dicts(
        _LATEST,
        {"id": incident_id, "kind": kind, "site": site, "open": None if status is None else status == "open",
         "limit": limit, "offset": offset},
    )  # fmt: skip
    return [{**r, "open": r["resolved_at"] is None} for r in rows]


def with_silences(row: dict, state: FleetState, now: float) -> dict:
    """An incident's row with the acknowledgement and silence of it in force at ``now``."""
    iid = row["incident_id"]
    return {**row, "acknowledged": state.silences.holding("acknowledge", "incident", iid, now),
            "silenced": state.silences.holding("silence", "incident", iid, now)}  # fmt: skip


def incident_detail(store: Store, state: FleetState, incident_id: str, now: float) -> IncidentDetail | None:
    """One incident with its records and its member cameras (their inventory and member alerts); None when the
    store has no such incident."""
    found = query_incidents(store, incident_id=incident_id, limit=1)
    if not found:
        return None
    row = with_silences(found[0], state, now)
    history = store.query_dicts(
        """
        SELECT status, toUnixTimestamp64Milli(changed_at) / 1000 AS changed_at, changed_alert_ids AS alert_ids
        FROM incidents FINAL WHERE incident_id = {id:String}
        ORDER BY incidents.changed_at, status = 'resolved'
        """,
        {"id": incident_id},
    )
    alerts = store.query_dicts(
        f"""
        SELECT {ALERT_COLUMNS} FROM alerts FINAL
        WHERE camera_id IN {{cameras:Array(String)}} AND alert_id IN {{alerts:Array(String)}}
        ORDER BY alerts.raised_at, alert_id, status
        """,
        {"cameras": row["cameras"], "alerts": list(row["members"])},
    )
    by_camera: dict[str, list[Alert]] = {c: [] for c in row["cameras"]}
    for a in alerts:
        by_camera.setdefault(a["camera_id"], []).append(Alert(**a))
    members = [
        MemberCamera(camera_id=c, inventory=camera_inventory(state, c, now), alerts=found_alerts)
        for c, found_alerts in sorted(by_camera.items())
    ]
    return IncidentDetail(**row, history=[IncidentChange(**h) for h in history], member_cameras=members)


@router.get("/api/v1/incidents", response_model=list[IncidentSummary])
def incidents(
    store: StoreDep,
    state: StateDep,
    status: Annotated[Literal["open", "resolved"] | None, Query(description="open or resolved only")] = None,
    site: Annotated[str | None, Query(min_length=1, max_length=100, description="the site its cameras share")] = None,
    kind: Annotated[Kind | None, Query(description="environment, upstream, model or device")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[IncidentSummary]:
    """Incidents across cameras, open ones first, then the newest opened; each as its newest record left it,
    with the acknowledgement and silence of it in force. Page with ``limit`` and ``offset``."""
    now = time.time()
    rows = query_incidents(store, status=status, site=site, kind=kind, limit=limit, offset=offset)
    return [IncidentSummary(**with_silences(r, state, now)) for r in rows]


@router.get("/api/v1/incidents/{incident_id}", response_model=IncidentDetail,
            responses={404: {"description": "unknown incident"}})  # fmt: skip
def incident(incident_id: IncidentId, store: StoreDep, state: StateDep) -> IncidentDetail:
    """One incident: its state, its records (raise, joins, resolve), and each member camera with its inventory
    and its member alerts' records, side by side."""
    detail = incident_detail(store, state, incident_id, time.time())
    if detail is None:
        raise HTTPException(status_code=404, detail=f"unknown incident {incident_id!r}")
    return detail
