"""Which models each camera's frames go to: a champion, and a challenger in shadow on a share of them, per fleet,
site or camera (:mod:`core.assignment`).

An assignment is part of its scope's record on the compacted ``config`` topic (:mod:`api.config`), keyed by the
scope: ``fleet``, ``site:<name>`` (the site of the camera inventory, :mod:`api.fleet`) or a camera id; every
worker follows that topic, loads the models it names and sends each camera's frames where it says within about a
second. A model the registry does not have (``GET /api/v1/models``), or one that is no detector, is refused here
(422), as is a share outside 0-1; a worker refuses such a record too (it is dead-lettered). Reads follow the
read access of the other routes; changes need an API token.
"""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.auth import TOKEN_RESPONSES, read_access, require_token
from api.config import ConfigState
from api.config import StateDep as ConfigDep
from api.guard import guarded
from core.assignment import FLEET, SITE, Route, effective, scopes
from core.contracts import CameraConfig, ModelAssignment
from core.settings import Settings

ScopeId = Annotated[
    str,
    Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$",
         description="'fleet', 'site:<name>' or a camera id"),
]  # fmt: skip

MAX_BODY_BYTES = 16 * 1024  # a few model names
router = APIRouter(prefix="/api/v1/models", tags=["models"], responses=TOKEN_RESPONSES,
                   route_class=guarded(MAX_BODY_BYTES))  # fmt: skip
reads = {"dependencies": [Depends(read_access)]}
writes = {"dependencies": [Depends(require_token)], "status_code": status.HTTP_202_ACCEPTED}


class AssignRequest(BaseModel):
    """A scope's models; a field left out (or null) keeps the level below's (camera over site over fleet over
    the workers' ``CVOPS_MODEL``)."""

    model_config = ConfigDict(extra="forbid")

    champion: str | None = Field(None, max_length=200, description="name or name@version of a detector of the "
                                 "registry: its predictions, metrics and alerts are the cameras'")  # fmt: skip
    challenger: str | None = Field(None, max_length=200, description="a detector run in shadow on `share` of "
                                   "the frames: its predictions go to shadow-predictions only")  # fmt: skip
    share: float | None = Field(None, description="the share of each camera's frames the challenger also sees, "
                                "0-1 (0: no shadow; default 0.1 with a challenger)")  # fmt: skip

    @field_validator("share")
    @classmethod
    def _a_share(cls, share: float | None) -> float | None:
        if share is not None and not (math.isfinite(share) and 0 <= share <= 1):
            raise ValueError(f"share is the part of the frames the challenger sees, between 0 and 1; not {share}")
        return share


class AssignmentView(BaseModel):
    scope: str
    own: ModelAssignment | None = Field(description="this scope's own assignment; null: none")
    effective: ModelAssignment = Field(description="what its cameras' frames go to, every level applied (for a "
                                       "camera: the fleet's, its site's and its own)")  # fmt: skip
    site: str | None = Field(None, description="a camera's site, from the inventory")


def _check_scope(scope: str) -> None:
    if scope.startswith(SITE) and len(scope) == len(SITE):
        raise HTTPException(status_code=422, detail="a site scope names its site: 'site:<name>'")


def registered(settings: Settings, ref: str, role: str) -> str:
    """``ref`` as ``name@version`` of a detector of the registry; 422 saying what is wrong otherwise."""
    from models import ModelError, resolve

    try:
        spec = resolve(ref, settings.model_dirs)
    except ModelError as exc:
        raise HTTPException(status_code=422, detail=f"{role} {ref!r} is not in the model registry: {exc}") from None
    if spec.task != "detection":
        raise HTTPException(status_code=422, detail=f"{role} {ref!r} is a {spec.task} model, not a detector")
    return spec.ref


def route_at(request: Request, state: ConfigState, scope: str) -> tuple[Route, str | None]:
    """The effective route at ``scope`` (a camera: with its site's, from the inventory), and the camera's site."""
    site = None
    if scope == FLEET:
        levels = [FLEET]
    elif scope.startswith(SITE):
        levels = [FLEET, scope]
    else:
        site = (request.app.state.fleet.inventory.cameras.get(scope) or {}).get("site")
        levels = scopes(scope, site)
    own = [state.records[s].models if s in state.records else None for s in levels]
    return effective(state.settings.model, own), site


def _view(request: Request, state: ConfigState, scope: str) -> AssignmentView:
    route, site = route_at(request, state, scope)
    record = state.records.get(scope)
    return AssignmentView(
        scope=scope,
        own=record.models if record else None,
        effective=ModelAssignment(champion=route.champion, challenger=route.challenger or None, share=route.share),
        site=site,
    )


@router.get("/assignments", response_model=dict[str, ModelAssignment], **reads)
async def list_assignments(state: ConfigDep) -> dict[str, ModelAssignment]:
    """Every scope's own assignment, by scope (``fleet``, ``site:<name>``, camera ids)."""
    return {scope: r.models for scope, r in sorted(state.records.items()) if r.models is not None}


@router.get("/assignments/{scope}", response_model=AssignmentView, **reads)
async def get_assignment(scope: ScopeId, request: Request, state: ConfigDep) -> AssignmentView:
    """A scope's own assignment and what its cameras' frames go to."""
    _check_scope(scope)
    return _view(request, state, scope)


@router.put("/assignments/{scope}", response_model=CameraConfig, **writes)
async def put_assignment(scope: ScopeId, body: AssignRequest, request: Request, state: ConfigDep) -> CameraConfig:
    """Replace a scope's models. Accepted: the workers load them and send the frames there within seconds. A model
    that is not a detector of the registry, or a share outside 0-1, is refused (422)."""
    _check_scope(scope)
    settings = state.settings
    champion = registered(settings, body.champion, "champion") if body.champion else None
    challenger = registered(settings, body.challenger, "challenger") if body.challenger else None
    current = state.records.get(scope)
    own = current.models if current else None
    before, _ = route_at(request, state, scope)
    # a roll back returns to the champion before the last change made here
    previous = (own.previous if own else None) if champion in (None, own.champion if own else None) else before.champion
    models = ModelAssignment(champion=champion, challenger=challenger, share=body.share, previous=previous)
    record = await state.assign(scope, models, _who(request))
    assert record is not None
    return record


@router.delete("/assignments/{scope}", **writes)
async def delete_assignment(scope: ScopeId, request: Request, state: ConfigDep) -> dict:
    """Remove a scope's own models: its cameras follow the level below again."""
    _check_scope(scope)
    current = state.records.get(scope)
    if current is None or current.models is None:
        raise HTTPException(status_code=404, detail=f"{scope!r} has no models of its own")
    await state.assign(scope, None, _who(request))
    return {"scope": scope, "removed": True}


def _who(request: Request) -> str:
    return f"api token via {request.client.host if request.client else 'unknown'}"
