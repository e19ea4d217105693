"""Which models each camera's frames go to: a champion, and a challenger in shadow on a share of them, per fleet,
site or camera (:mod:`core.assignment`).

An assignment is part of its scope's record on the compacted ``config`` topic (:mod:`api.config`), keyed by the
scope: ``fleet``, ``site:<name>`` (the site of the camera inventory, :mod:`api.fleet`) or a camera id; every
worker follows that topic, loads the models it names and sends each camera's frames where it says within about a
second. A model the registry does not have (``GET /api/v1/models``), or one that is no detector, is refused here
(422), as is a share outside 0-1; a worker refuses such a record too (it is dead-lettered). Reads follow the
read access of the other routes; changes need an API token.

Promotion (the challenger becomes the champion, the champion the challenger) and roll back (the champion before
the last change at the scope is back) are changes of the same record; each change of a scope's champion is
recorded on the ``model-changes`` topic, and so in the store's ``model_changes`` table: who (the name the caller
gives, its token's hash prefix and address), when, from which model version to which (``GET .../changes``).
How far the challenger agrees with the champion, per camera and class over time, is read from the store's
``shadow_predictions`` (``GET /api/v1/cameras/{camera_id}/agreement``).
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.auth import TOKEN_RESPONSES, Credentials, read_access, require_token
from api.cameras import Since, Until
from api.cameras import _range as time_range
from api.config import ConfigState
from api.config import StateDep as ConfigDep
from api.dependencies import NowDep, StoreDep
from api.guard import guarded
from api.tokens import hash_token
from core.assignment import FLEET, SITE, AssignmentError, Route, effective, promote, rollback, scopes
from core.contracts import CameraConfig, ModelAssignment, ModelChange
from core.settings import Settings
from models.agreement import Agreement

ScopeId = Annotated[
    str,
    Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$",
         description="'fleet', 'site:<name>' or a camera id"),
]  # fmt: skip

MAX_BODY_BYTES = 16 * 1024  # a few model names
router = APIRouter(prefix="/api/v1", tags=["models"], responses=TOKEN_RESPONSES,
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
    by: str = Field("", max_length=100, description="who, by the name they give (recorded with a change of "
                    "champion)")  # fmt: skip

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


def exact_or_as_is(settings: Settings, ref: str) -> str:
    """``ref`` as ``name@version`` when the registry has it, else as it is."""
    name, version = _split(settings, ref)
    return f"{name}@{version}" if version else ref


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


@router.get("/models/assignments", response_model=dict[str, ModelAssignment], **reads)
async def list_assignments(state: ConfigDep) -> dict[str, ModelAssignment]:
    """Every scope's own assignment, by scope (``fleet``, ``site:<name>``, camera ids)."""
    return {scope: r.models for scope, r in sorted(state.records.items()) if r.models is not None}


@router.get("/models/assignments/{scope}", response_model=AssignmentView, **reads)
async def get_assignment(scope: ScopeId, request: Request, state: ConfigDep) -> AssignmentView:
    """A scope's own assignment and what its cameras' frames go to."""
    _check_scope(scope)
    return _view(request, state, scope)


@router.put("/models/assignments/{scope}", response_model=CameraConfig, **writes)
async def put_assignment(
    scope: ScopeId, body: AssignRequest, request: Request, state: ConfigDep, credentials: Credentials
) -> CameraConfig:
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
    changed = champion is not None and _split(settings, champion) != _split(settings, before.champion)
    previous = exact_or_as_is(settings, before.champion) if changed else own.previous if own else None
    models = ModelAssignment(champion=champion, challenger=challenger, share=body.share, previous=previous)
    record = await state.assign(scope, models, _who(request))
    assert record is not None
    after, _ = route_at(request, state, scope)
    if _split(settings, after.champion) != _split(settings, before.champion):
        await _record(state, scope, "assign", before, after, body.by or "unnamed", via(request, credentials))
    return record


@router.delete("/models/assignments/{scope}", **writes)
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


def via(request: Request, credentials) -> str:
    """What the server knows of a caller: a prefix of its token's SHA-256 (never the token) and its address."""
    token = hash_token(credentials.credentials)[:8] if credentials is not None else "none"
    return f"api token {token} from {request.client.host if request.client else 'unknown'}"


# --- promotion and roll back ------------------------------------------------------------------------------------


class ChangeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: str = Field(min_length=1, max_length=100, description="who, by the name they give")
    comment: str = Field("", max_length=1000)


def _split(settings: Settings, ref: str) -> tuple[str, str]:
    """(name, version) of ``ref``, its version read from the registry when it names none."""
    name, _, version = ref.partition("@")
    if not version:
        with contextlib.suppress(HTTPException):
            name, _, version = registered(settings, ref, "model").partition("@")
    return name, version


async def _record(
    state: ConfigState, scope: str, action: str, before: Route, after: Route, by: str, caller: str, comment: str = ""
) -> ModelChange:
    """Record a change of ``scope``'s champion on the model-changes topic (the store keeps it)."""
    (from_model, from_version), (to_model, to_version) = (_split(state.settings, r.champion) for r in (before, after))
    change = ModelChange(
        change_id=uuid.uuid4().hex, scope=scope, action=action, from_model=from_model, from_version=from_version,
        to_model=to_model, to_version=to_version, challenger=after.challenger if after.shadowed else "",
        share=after.share if after.shadowed else 0.0, by=by, via=caller, at=time.time(), comment=comment,
    )  # fmt: skip
    await state.send("model-changes", scope, change)
    return change


async def _switch(scope: str, action: str, body: ChangeRequest, request: Request, state: ConfigState, credentials):
    _check_scope(scope)
    before, _ = route_at(request, state, scope)
    current = state.records.get(scope)
    try:
        models = promote(before) if action == "promote" else rollback(current.models if current else None)
    except AssignmentError as exc:
        raise HTTPException(status_code=409, detail=f"{scope}: {exc}") from None
    exact = {k: exact_or_as_is(state.settings, v) for k in ("champion", "challenger", "previous")
             if (v := getattr(models, k))}  # fmt: skip
    await state.assign(scope, models.model_copy(update=exact), _who(request))
    after, _ = route_at(request, state, scope)
    return await _record(state, scope, action, before, after, body.by, via(request, credentials), body.comment)


CONFLICT = {409: {"description": "nothing to promote, or nothing to roll back to"}}


@router.post("/models/assignments/{scope}/promote", response_model=ModelChange, responses=CONFLICT, **writes)
async def promote_challenger(
    scope: ScopeId, body: ChangeRequest, request: Request, state: ConfigDep, credentials: Credentials
) -> ModelChange:
    """The scope's challenger becomes its champion: its cameras' new frames go to it (within seconds), and the
    champion before becomes the challenger at the same share, so that the two are still compared. Recorded."""
    return await _switch(scope, "promote", body, request, state, credentials)


@router.post("/models/assignments/{scope}/rollback", response_model=ModelChange, responses=CONFLICT, **writes)
async def roll_back(
    scope: ScopeId, body: ChangeRequest, request: Request, state: ConfigDep, credentials: Credentials
) -> ModelChange:
    """The champion before the scope's last change (a promotion, or a champion set here) is back; the one rolled
    back from becomes the challenger. Recorded."""
    return await _switch(scope, "rollback", body, request, state, credentials)


MODEL_CHANGE_FIELDS = [n for n in ModelChange.model_fields if n != "schema_version"]


@router.get("/models/changes", response_model=list[ModelChange], **reads)
def model_changes(
    store: StoreDep,
    scope: Annotated[str | None, Query(min_length=1, max_length=100, description="one scope's only")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[ModelChange]:
    """Champions assigned, promoted and rolled back, newest first: who, when, from which version to which."""
    rows = store.query(
        f"""
        SELECT {", ".join(f"`{n}`" for n in MODEL_CHANGE_FIELDS)}, toFloat64(`at`) AS at_s
        FROM model_changes FINAL
        WHERE {{scope:Nullable(String)}} IS NULL OR scope = {{scope:Nullable(String)}}
        ORDER BY at DESC, change_id LIMIT {{limit:UInt32}}
        """,
        {"scope": scope, "limit": limit},
    )
    return [ModelChange(**{**dict(zip(MODEL_CHANGE_FIELDS, row[:-1], strict=True)), "at": row[-1]}) for row in rows]


# --- agreement over time --------------------------------------------------------------------------------------


class Figures(BaseModel):
    """The challenger against the champion on the same frames, boxes matched one to one at IoU 0.5."""

    champion_boxes: int
    challenger_boxes: int
    matched: int
    precision: float = Field(description="of the challenger's boxes, the share the champion also has (1: none)")
    recall: float = Field(description="of the champion's boxes, the share the challenger also has (1: none)")
    f1: float
    count_delta: float = Field(description="challenger boxes - champion boxes, per frame")
    score_delta: float = Field(description="challenger score - champion score, mean over matched boxes (0: none)")
    confidence_delta: float | None = Field(description="the challenger's mean score - the champion's, over all "
                                           "their boxes; null when either has none")  # fmt: skip


class Comparison(BaseModel):
    start: float | None = Field(description="unix s of the interval's start; null for the whole range")
    champion: str = Field(description="name@version")
    challenger: str = Field(description="name@version")
    frames: int = Field(description="frames both models saw")
    all: Figures = Field(description="every class together (each box counts once)")
    classes: dict[str, Figures]


class AgreementHistory(BaseModel):
    camera_id: str
    step_s: int
    since: float
    until: float
    totals: list[Comparison] = Field(description="over the whole range, per champion and challenger")
    points: list[Comparison] = Field(description="per interval of step_s, per champion and challenger")


class _Sums:
    def __init__(self) -> None:
        self.agreement, self.champion_score, self.challenger_score = Agreement(), 0.0, 0.0

    def add(self, ref: int, cand: int, matched: int, delta: float, ref_score: float, cand_score: float) -> None:
        self.agreement = self.agreement + Agreement(ref, cand, matched, delta)
        self.champion_score += ref_score
        self.challenger_score += cand_score

    def figures(self, frames: int) -> Figures:
        a = self.agreement
        both = a.reference and a.candidate
        return Figures(
            champion_boxes=a.reference, challenger_boxes=a.candidate, matched=a.matched, precision=a.precision,
            recall=a.recall, f1=a.f1, count_delta=(a.candidate - a.reference) / frames if frames else 0.0,
            score_delta=a.score_delta,
            confidence_delta=self.challenger_score / a.candidate - self.champion_score / a.reference if both else None,
        )  # fmt: skip


@router.get("/cameras/{camera_id}/agreement", response_model=AgreementHistory,
            responses={400: {"description": "bad range or too many points"}}, **reads)  # fmt: skip
def agreement_history(
    camera_id: Annotated[str, Path(min_length=1, max_length=200)],
    store: StoreDep,
    now: NowDep,
    since: Since = None,
    until: Until = None,
    step: Annotated[int, Query(ge=60, le=86_400, multiple_of=60, description="seconds per point")] = 300,
) -> AgreementHistory:
    """The camera's challenger against its champion over time, per class and for all classes: precision, recall
    and F1 of the challenger's boxes against the champion's (matched at IoU 0.5), and the count and confidence
    deltas, on the frames the challenger saw in shadow."""
    start, end = time_range(since, until, step, now)
    params = {"camera": camera_id, "step": step, "since": round(start * 1000), "until": round(end * 1000)}
    where = """camera_id = {camera:String} AND captured_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')
               AND captured_at < fromUnixTimestamp64Milli({until:Int64}, 'UTC')"""
    pair = "intDiv(toUnixTimestamp(captured_at), {step:UInt32}) * {step:UInt32} AS t, champion_name, champion_version, "
    pair += "model_name, model_version"
    frames = store.query(f"SELECT {pair}, count() FROM shadow_predictions FINAL WHERE {where} GROUP BY ALL", params)
    classes = store.query(
        f"""
        SELECT {pair}, a_label, sum(a_ref), sum(a_cand), sum(a_matched), sum(a_delta), sum(a_ref_s), sum(a_cand_s)
        FROM shadow_predictions FINAL
        ARRAY JOIN agreement.label AS a_label, agreement.champion AS a_ref, agreement.challenger AS a_cand,
                   agreement.matched AS a_matched, agreement.score_delta_sum AS a_delta,
                   agreement.champion_score_sum AS a_ref_s, agreement.challenger_score_sum AS a_cand_s
        WHERE {where}
        GROUP BY ALL
        """,
        params,
    )
    return AgreementHistory(camera_id=camera_id, step_s=step, since=start, until=end,
                            **comparisons(frames, classes))  # fmt: skip


def comparisons(frames: list, classes: list) -> dict[str, list[Comparison]]:
    """``totals`` and ``points`` from the rows of the two queries of :func:`agreement_history`."""
    counts: dict[tuple, int] = {}
    sums: dict[tuple, dict[str, _Sums]] = {}
    for t, cn, cv, mn, mv, n in frames:
        for key in ((t, f"{cn}@{cv}", f"{mn}@{mv}"), (None, f"{cn}@{cv}", f"{mn}@{mv}")):
            counts[key] = counts.get(key, 0) + n
    for t, cn, cv, mn, mv, label, *numbers in classes:
        for key in ((t, f"{cn}@{cv}", f"{mn}@{mv}"), (None, f"{cn}@{cv}", f"{mn}@{mv}")):
            per = sums.setdefault(key, {})
            for name in (label, "\x00all"):
                per.setdefault(name, _Sums()).add(*numbers)
    out: dict[str, list[Comparison]] = {"totals": [], "points": []}
    for key in sorted(counts, key=lambda k: (k[0] is not None, k[0] or 0, k[1], k[2])):
        per, n = sums.get(key, {}), counts[key]
        everything = per.pop("\x00all", _Sums())
        comparison = Comparison(start=None if key[0] is None else float(key[0]), champion=key[1], challenger=key[2],
                                frames=n, all=everything.figures(n),
                                classes={label: v.figures(n) for label, v in sorted(per.items())})  # fmt: skip
        out["totals" if key[0] is None else "points"].append(comparison)
    return out
