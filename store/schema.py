"""The store's schema as versioned migrations, applied at start, recorded in ``schema_migrations``.

Each migration is applied once, in order; a second start changes nothing. Tables that receive stream
output use ``ReplacingMergeTree`` keyed by the record's identity (frame id, alert id and status, dead
letter offset): the stream is at-least-once, so a replayed record may be inserted twice, and the
duplicate collapses into one row at merge time. Exact counts read with ``FINAL``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from store.client import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def migrations(ttl_days: int) -> list[Migration]:
    ttl = f"TTL toDateTime(captured_at) + INTERVAL {int(ttl_days)} DAY"
    return [
        Migration(
            1,
            "frame metrics, predictions, alerts, dead letters",
            (
                f"""
CREATE TABLE IF NOT EXISTS frame_metrics (
    frame_id String,
    camera_id LowCardinality(String),
    seq UInt64,
    captured_at DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    processed_at DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    model_name LowCardinality(String),
    model_version LowCardinality(String),
    encoding LowCardinality(String),
    bytes UInt32,
    width UInt32,
    height UInt32,
    aspect_ratio Float32,
    brightness Float32,
    blur Float32,
    inference_ms Float32,
    detections UInt16
) ENGINE = ReplacingMergeTree(processed_at)
PARTITION BY toYYYYMMDD(captured_at)
ORDER BY (camera_id, captured_at, frame_id)
{ttl}""",
                f"""
CREATE TABLE IF NOT EXISTS predictions (
    frame_id String,
    camera_id LowCardinality(String),
    seq UInt64,
    captured_at DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    processed_at DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    model_name LowCardinality(String),
    model_version LowCardinality(String),
    width UInt32,
    height UInt32,
    batch_size UInt16,
    queue_ms Float32,
    decode_ms Float32,
    preprocess_ms Float32,
    inference_ms Float32,
    postprocess_ms Float32,
    detections Nested(
        label LowCardinality(String),
        class_id UInt16,
        score Float32,
        x1 Float32,
        y1 Float32,
        x2 Float32,
        y2 Float32
    )
) ENGINE = ReplacingMergeTree(processed_at)
PARTITION BY toYYYYMMDD(captured_at)
ORDER BY (camera_id, captured_at, frame_id)
{ttl}""",
                f"""
CREATE TABLE IF NOT EXISTS alerts (
    alert_id String,
    status LowCardinality(String),
    type LowCardinality(String),
    severity LowCardinality(String),
    camera_id LowCardinality(String),
    signal LowCardinality(String),
    value Float64,
    threshold Float64,
    window UInt32,
    model_name LowCardinality(String),
    model_version LowCardinality(String),
    evidence_frame_ids Array(String),
    raised_at DateTime64(3, 'UTC'),
    message String
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(raised_at)
ORDER BY (camera_id, alert_id, status)
TTL toDateTime(raised_at) + INTERVAL {int(ttl_days)} DAY""",
                f"""
CREATE TABLE IF NOT EXISTS dead_letters (
    source_topic LowCardinality(String),
    partition UInt32,
    offset UInt64,
    key String,
    reason LowCardinality(String),
    detail String,
    payload_bytes UInt32,
    received_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (source_topic, partition, offset)
TTL toDateTime(received_at) + INTERVAL {int(ttl_days)} DAY""",
            ),
        ),
    ]


def migrate(store: Store, ttl_days: int = 30) -> list[int]:
    """Apply the migrations not yet recorded; return the versions applied now."""
    store.command(
        """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32,
    name String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree ORDER BY version"""
    )
    done = {row[0] for row in store.query("SELECT version FROM schema_migrations FINAL")}
    applied = []
    for m in migrations(ttl_days):
        if m.version in done:
            continue
        for statement in m.statements:
            store.command(statement)
        store.insert("schema_migrations", [(m.version, m.name)], ["version", "name"])
        log.info("store migration %d applied: %s", m.version, m.name)
        applied.append(m.version)
    return applied
