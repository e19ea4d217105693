"""``POST /api/v1/sql``: analysts' read-only SQL, through :func:`store.readonly.run_readonly`, token required.

Analysts' queries run on threads of their own, at most ``CVOPS_STORE_SQL_MAX_CONCURRENT`` at once (running or
waiting for the store's read session): one more is answered 429 with ``Retry-After`` at once, so queued
queries never take the thread pool that every other route waits on.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import ipaddress
import math
import uuid
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from api.auth import TOKEN_RESPONSES, require_token
from api.dependencies import StoreDep
from api.guard import guarded
from store.readonly import RefusedQuery, SqlLimits, run_readonly
from store.settings import StoreSettings

Scalar = str | int | float | bool | None
# The largest body the route reads (413 beyond, before parsing): a 100,000-character query, its parameters
# and JSON's escapes fit.
MAX_BODY_BYTES = 1 << 20
ParamName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)]


class SqlQuery(BaseModel):
    sql: str = Field(min_length=1, max_length=100_000, description="one SELECT or WITH … SELECT statement")
    parameters: dict[ParamName, Scalar | list[Scalar]] = Field(
        default_factory=dict,
        max_length=100,
        description="values of the query's {name:Type} placeholders, by name",
        examples=[{"camera": "cam-1"}],
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "sql": "SELECT camera_id, count() AS frames FROM frame_metrics WHERE camera_id = {camera:String} "
                    "GROUP BY camera_id",
                    "parameters": {"camera": "cam-1"},
                }
            ]
        }
    }


class SqlResult(BaseModel):
    columns: list[str]
    types: list[str] = Field(description="ClickHouse type of each column")
    rows: list[list[Any]] = Field(description="times as ISO 8601 UTC, NaN and infinities as null")


class Refusal(BaseModel):
    reason: str = Field(description="short code: not_a_select, forbidden_table, engine_readonly, ...")
    detail: str


class RefusalBody(BaseModel):
    detail: Refusal


router = APIRouter(tags=["sql"], route_class=guarded(MAX_BODY_BYTES))


def limits_from(settings: StoreSettings) -> SqlLimits:
    return SqlLimits(
        max_rows=settings.store_sql_max_rows,
        max_result_bytes=settings.store_sql_max_result_bytes,
        max_execution_s=settings.store_sql_max_execution_s,
        max_memory_bytes=settings.store_sql_max_memory_bytes,
    )


def sql_slots(app, size: int) -> anyio.CapacityLimiter:
    """The app's analysts' query slots (their own threads), resized to ``size``."""
    slots = getattr(app.state, "sql_slots", None)
    if slots is None:
        slots = app.state.sql_slots = anyio.CapacityLimiter(size)
    elif slots.total_tokens != size:
        slots.total_tokens = size
    return slots


@router.post(
    "/api/v1/sql",
    response_model=SqlResult,
    dependencies=[Depends(require_token)],
    responses={
        400: {"model": RefusalBody, "description": "the query was refused"},
        413: {"description": f"a body over {MAX_BODY_BYTES} bytes"},
        429: {"model": RefusalBody, "description": "as many queries as allowed are running: retry after a while"},
        **TOKEN_RESPONSES,
    },
)
async def sql(query: SqlQuery, store: StoreDep, request: Request) -> SqlResult:
    """Run one read-only statement within the store's limits (``CVOPS_STORE_SQL_*``). Writes, DDL, settings,
    tables of other databases, table functions and functions that reach outside the data are refused with
    400 and a reason; so is what the engine refuses. 429 when ``CVOPS_STORE_SQL_MAX_CONCURRENT`` queries run."""
    settings = StoreSettings()
    slots = sql_slots(request.app, settings.store_sql_max_concurrent)
    try:
        # Taken at once or not at all (a check, then a wait for the slot, would let a burst queue past the check).
        slots.acquire_nowait()
    except anyio.WouldBlock:
        raise HTTPException(
            status_code=429,
            detail={"reason": "busy", "detail": f"{slots.total_tokens} queries are running: retry shortly"},
            headers={"Retry-After": "1"},
        ) from None
    limits = limits_from(settings)

    def run() -> SqlResult:
        result = run_readonly(store, query.sql, query.parameters, limits)
        rows = [[json_cell(v) for v in row] for row in result.rows]
        return SqlResult(columns=result.columns, types=result.types, rows=rows)

    try:
        # On a thread of its own slot, not of the pool every other route shares: a slow query blocks nothing.
        return await anyio.to_thread.run_sync(run, limiter=anyio.CapacityLimiter(1))
    except RefusedQuery as refused:
        raise HTTPException(status_code=400, detail={"reason": refused.reason, "detail": refused.detail}) from None
    finally:
        slots.release()


def json_cell(value: Any) -> Any:
    """A value from ClickHouse as JSON can hold it: NaN and infinities as None (JSON has no such numbers), times
    as ISO 8601 (naive ones are UTC), bytes as text or base64, decimals, UUIDs and addresses as text.

    >>> [json_cell(v) for v in (float("nan"), dt.datetime(2026, 1, 2, 3, 4, 5), b"\\xff", (1, [2.5]))]
    [None, '2026-01-02T03:04:05+00:00', '/w==', [1, [2.5]]]
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            return base64.b64encode(value).decode()
    if isinstance(value, decimal.Decimal):
        return str(value) if value.is_finite() else None
    if isinstance(value, uuid.UUID | ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(value)
    if isinstance(value, dict):
        return {str(json_cell(k)): json_cell(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_cell(v) for v in value]
    return str(value)
