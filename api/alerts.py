"""Alerts: ``GET /api/v1/alerts`` (stored, filtered, paged) and ``GET /api/v1/alerts/stream`` (live, SSE)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from api.auth import TOKEN_RESPONSES, read_access
from api.dependencies import ApiSettingsDep, StoreDep
from api.instants import END_OF_TIME_MS, Instant, unix_ms
from api.live import AlertFeed, Subscription
from core.contracts import Alert, AlertType
from store import Store

router = APIRouter(tags=["alerts"], dependencies=[Depends(read_access)], responses=TOKEN_RESPONSES)

CameraId = Annotated[str, Query(min_length=1, max_length=200)]

ALERT_COLUMNS = """alert_id, type, status, severity, camera_id, signal, value, threshold, window, model_name,
    model_version, evidence_frame_ids, toUnixTimestamp64Milli(raised_at) / 1000 AS raised_at, message, caused_by"""


def query_alerts(
    store: Store,
    camera_id: str | None = None,
    type: str | None = None,
    status: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Alert]:
    """Alert records (raised and resolved), newest first, filtered by what is not None; ``since`` inclusive,
    ``until`` exclusive. Ties are broken by alert id and status so that pages do not overlap."""
    rows = store.query_dicts(
        f"""
        SELECT {ALERT_COLUMNS}
        FROM alerts FINAL
        WHERE ({{camera:Nullable(String)}} IS NULL OR camera_id = {{camera:Nullable(String)}})
          AND ({{type:Nullable(String)}} IS NULL OR type = {{type:Nullable(String)}})
          AND ({{status:Nullable(String)}} IS NULL OR status = {{status:Nullable(String)}})
          AND alerts.raised_at >= fromUnixTimestamp64Milli({{since:Int64}})
          AND alerts.raised_at < fromUnixTimestamp64Milli({{until:Int64}})
        ORDER BY alerts.raised_at DESC, alert_id, status
        LIMIT {{limit:UInt32}} OFFSET {{offset:UInt64}}
        """,
        {
            "camera": camera_id,
            "type": type,
            "status": status,
            "since": unix_ms(since) if since else 0,
            "until": unix_ms(until) if until else END_OF_TIME_MS,
            "limit": limit,
            "offset": offset,
        },
    )
    return [Alert(**r) for r in rows]


@router.get("/api/v1/alerts", response_model=list[Alert])
def alerts(
    store: StoreDep,
    camera_id: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    type: Annotated[AlertType | None, Query(description="alert type")] = None,
    status: Annotated[
        Literal["raised", "resolved", "suppressed"] | None,
        Query(description="suppressed: symptoms, each recorded under the alert of its cause (caused_by)"),
    ] = None,
    since: Annotated[Instant | None, Query(description="raised at or after: unix s or ISO 8601")] = None,
    until: Annotated[Instant | None, Query(description="raised before: unix s or ISO 8601")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[Alert]:
    """Alert records, newest first (a raised and a resolved record per alert once it is resolved). A symptom
    of another alert of its camera has status ``suppressed`` and that alert's id in ``caused_by``, and is
    resolved with its own id (docs/alerts.md). Page with ``limit`` and ``offset``."""
    if since is not None and until is not None and since >= until:
        raise HTTPException(status_code=400, detail="since must be before until")
    return query_alerts(store, camera_id, type, status, since, until, limit, offset)


@router.get(
    "/api/v1/alerts/stream",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "alerts as server-sent events"},
        429: {"description": "this client has CVOPS_API_SSE_MAX_PER_CLIENT streams open already"},
        503: {"description": "the live feed is not connected to the broker, or too many streams are open"},
    },
)
async def alert_stream(
    request: Request,
    settings: ApiSettingsDep,
    camera_id: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> StreamingResponse:
    """Alerts as they are published, as Server-Sent Events: ``event: alert`` with the alert as JSON (its
    ``id:`` is ``partition:offset``), ``event: dropped`` with ``{"count": n}`` when this client fell behind
    and lost n alerts, and a ``: keepalive`` comment after each quiet ``CVOPS_API_SSE_HEARTBEAT_S``. Only alerts
    published after the stream opens; the stored ones are at ``/api/v1/alerts``. At most
    ``CVOPS_API_SSE_MAX_PER_CLIENT`` streams per client address, ``CVOPS_API_SSE_MAX_SUBSCRIBERS`` in all."""
    feed: AlertFeed = request.app.state.alert_feed
    try:
        await asyncio.wait_for(feed.ready.wait(), 5)
    except TimeoutError:
        raise HTTPException(status_code=503, detail="the live alert feed is not connected to the broker") from None
    client = request.client.host if request.client else None
    if feed.open_by(client) >= settings.api_sse_max_per_client:
        raise HTTPException(
            status_code=429,
            detail=f"this client has {settings.api_sse_max_per_client} live alert streams open; close one first",
        )
    subscription = feed.subscribe(camera_id, client)
    if subscription is None:
        raise HTTPException(status_code=503, detail="too many live alert streams are open; try again later")
    return StreamingResponse(
        _events(subscription, feed, settings.api_sse_heartbeat_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(subscription: Subscription, feed: AlertFeed, heartbeat_s: float) -> AsyncIterator[str]:
    try:
        yield ": subscribed\n\n"
        while True:
            try:
                event = await asyncio.wait_for(subscription.queue.get(), heartbeat_s)
            except TimeoutError:
                yield ": keepalive\n\n"
                continue
            if subscription.dropped:
                yield f'event: dropped\ndata: {{"count": {subscription.dropped}}}\n\n'
                subscription.dropped = 0
            event_id, alert = event
            yield f"event: alert\nid: {event_id}\ndata: {alert.model_dump_json()}\n\n"
    finally:
        feed.unsubscribe(subscription)
