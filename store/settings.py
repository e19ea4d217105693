"""Settings of the store alone, read from the same ``CVOPS_`` environment (and env file) as
:class:`core.settings.Settings`, so the store stays independent of the stream package.

Retention is per table: ``CVOPS_TTL_DAYS`` is the default (shared with ``core.settings``) and
``CVOPS_TTL_DAYS_<TABLE>`` overrides one table, e.g. ``CVOPS_TTL_DAYS_FRAME_METRICS=7``. A changed TTL is
applied at the next start (``ALTER TABLE ... MODIFY TTL``); an unchanged one is left alone.
"""

from __future__ import annotations

import os

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Tables whose rows expire, with the column their TTL counts from (``camera_inventory`` never expires).
TTL_COLUMNS = {
    "frame_metrics": "captured_at",
    "predictions": "captured_at",
    "detections": "captured_at",
    "alerts": "raised_at",
    "dead_letters": "received_at",
    "drift_stats": "computed_at",
    "device_health": "observed_at",
    "edge_cases": "flagged_at",
    "metrics_minute": "minute",
    "evidence_frames": "captured_at",
    "camera_views": "captured_at",
    "incidents": "changed_at",
    "acknowledgements": "at",
}

_TABLE_TTL = "retention of the table in the name, days; empty = CVOPS_TTL_DAYS"


class StoreSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CVOPS_",
        env_file=os.environ.get("CVOPS_ENV_FILE", ".env"),
        extra="ignore",
    )

    ttl_days: int = Field(30, ge=1, description="default retention of stored rows, days")
    ttl_days_frame_metrics: int | None = Field(None, ge=1, description=_TABLE_TTL)
    ttl_days_predictions: int | None = Field(None, ge=1, description=_TABLE_TTL)
    ttl_days_detections: int | None = Field(None, ge=1, description=_TABLE_TTL)
    ttl_days_alerts: int | None = Field(None, ge=1, description="its table's retention, days; empty = CVOPS_TTL_DAYS")
    ttl_days_dead_letters: int | None = Field(None, ge=1, description=_TABLE_TTL)
    ttl_days_drift_stats: int | None = Field(None, ge=1, description=_TABLE_TTL)
    ttl_days_device_health: int | None = Field(None, ge=1, description=_TABLE_TTL)
    ttl_days_edge_cases: int | None = Field(None, ge=1, description=_TABLE_TTL)
    ttl_days_metrics_minute: int | None = Field(None, ge=1, description=_TABLE_TTL)
    ttl_days_evidence_frames: int | None = Field(None, ge=1, description=_TABLE_TTL)
    ttl_days_camera_views: int | None = Field(None, ge=1, description=_TABLE_TTL)
    ttl_days_incidents: int | None = Field(None, ge=1, description=_TABLE_TTL)
    ttl_days_acknowledgements: int | None = Field(None, ge=1, description=_TABLE_TTL)

    store_dedup_window: int = Field(
        1000, ge=0, description="recent insert blocks each table remembers to drop a replayed one; 0 = off"
    )
    store_max_future_s: float = Field(300.0, ge=0, description="rows timed later than now + this are rejected")
    store_max_age_days: float = Field(400.0, gt=0, description="rows timed earlier than now - this are rejected")

    store_sql_max_rows: int = Field(10_000, ge=1, description="rows an analyst query may return")
    store_sql_max_execution_s: float = Field(10.0, gt=0, description="time an analyst query may run, s")
    store_sql_max_memory_bytes: int = Field(1 << 30, ge=1 << 20, description="memory an analyst query may use")
    store_sql_max_result_bytes: int = Field(
        64 << 20, ge=1 << 10, description="bytes of result an analyst query may return (measured as it is read)"
    )
    store_sql_dsn: str = Field(
        "",
        description="where analysts' queries run: on a ClickHouse server, a DSN of a read-only user with SELECT on "
        "the store's database only (docs/security.md); empty = the store's own DSN, as on the embedded engine",
    )
    store_sql_max_concurrent: int = Field(
        2, ge=1, description="analyst queries run (or wait for the store) at once; more are answered 429"
    )

    def ttl_for(self, table: str) -> int:
        """Retention of ``table`` in days: its own setting, else ``ttl_days``."""
        return getattr(self, f"ttl_days_{table}", None) or self.ttl_days
