"""The store's schema as versioned migrations, applied at start, recorded in ``schema_migrations``.

Each migration is applied once, in order; a second start changes nothing. Migration 1 is deployed and
never edited: a change is a new migration.

Duplicates (the stream is at-least-once) are absorbed twice over:

- Tables that receive stream output are ``ReplacingMergeTree`` keyed by the record's identity (frame id,
  alert id and status, dead-letter offset): a record inserted twice collapses into one row at merge time;
  exact counts read with ``FINAL``.
- Each of those tables, and every materialized-view target, remembers its last ``store_dedup_window``
  insert blocks (``non_replicated_deduplication_window``) and the writer names each insert with a token
  made of the Kafka offsets it holds (``insert_deduplication_token``). A batch replayed after a crash or a
  lost insert acknowledgement is dropped whole by ClickHouse, so the per-minute aggregates, which
  ``FINAL`` cannot fix, are not fed twice either.

Materialized views (migration 2) keep what the API and dashboard read often small and ready:
``detections`` (one row per detection, sorted by camera and class), ``metrics_minute`` (per camera,
minute and model), ``cameras`` (latest status of each camera), ``model_versions``, and ``drift_stats``,
``device_health``, ``edge_cases`` fed from alerts until their own topics exist. Migration 6 feeds
``drift_stats`` from the metrics too: the statistics the monitors sample every few seconds per camera.
Migration 8 adds bloom-filter skip indexes where a look-up's key is not in the sort key (a frame's
predictions by frame id, an alert's evidence by alert id), so that it reads a granule or two, not the table.
Migration 9 adds ``caused_by`` to the alerts (the cause a ``suppressed`` alert is a symptom of, see
docs/alerts.md), and has ``drift_stats`` and ``device_health`` count a symptom as the drift or fault it is.
Migration 10 adds ``incidents`` (one row per change of an incident across cameras) and ``camera_inventory``
(what a gateway and an operator say of each camera: site, tags, notes), written from their topics;
migration 11 ``acknowledgements`` (who acknowledged or silenced an incident or a camera, when, until when).

The tables the writer fills are declared once, as they are now, in :mod:`store.tables`: a fresh store creates
them from there first, and the migrations that built them step by step on an older store then change nothing
(``IF NOT EXISTS``). Both ways end in the same tables, to the byte of ``SHOW CREATE TABLE`` (a test holds them
to ``tests/store/schema.sql``). A change to one of them is a new migration and the same change to its
declaration.

Retention (TTL) and the dedup window are settings, not migrations (:mod:`store.settings`): each start
compares them with the tables and alters only what differs.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from store.client import Store
from store.settings import TTL_COLUMNS, StoreSettings
from store.tables import TABLES

log = logging.getLogger(__name__)

# Tables written by inserts (writer or materialized views) that take part in block deduplication.
DEDUP_TABLES = (
    "frame_metrics",
    "predictions",
    "alerts",
    "dead_letters",
    "detections",
    "metrics_minute",
    "cameras",
    "model_versions",
    "drift_stats",
    "device_health",
    "edge_cases",
    "evidence_frames",
    "camera_views",
    "incidents",
    "camera_inventory",
    "acknowledgements",
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def migrations(ttl_days: int) -> list[Migration]:
    """Every migration, in order; a store records the ones it has applied (``schema_migrations``)."""
    return [
        _migration_1(ttl_days),
        _migration_2(ttl_days),
        *_migrations_3_to_6(ttl_days),
        *_migrations_7_to_9(ttl_days),
        _migration_10(ttl_days),
        _migration_11(ttl_days),
    ]


def _migration_1(ttl_days: int) -> Migration:
    ttl = f"TTL toDateTime(captured_at) + INTERVAL {int(ttl_days)} DAY"
    return Migration(
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
    )


def _migrations_3_to_6(ttl_days: int) -> list[Migration]:
    return [
        Migration(
            3,
            "frame_metrics: contrast, saturation, exposure, frame difference, black, mean confidence",
            (
                """
ALTER TABLE frame_metrics
    ADD COLUMN IF NOT EXISTS contrast Float32,
    ADD COLUMN IF NOT EXISTS saturation Float32,
    ADD COLUMN IF NOT EXISTS under_exposed Float32,
    ADD COLUMN IF NOT EXISTS over_exposed Float32,
    ADD COLUMN IF NOT EXISTS frame_diff Nullable(Float32),
    ADD COLUMN IF NOT EXISTS black Bool,
    ADD COLUMN IF NOT EXISTS mean_confidence Float32""",
            ),
        ),
        Migration(
            4,
            "evidence frames: thumbnails of the frames that prove each alert",
            (
                f"""
CREATE TABLE IF NOT EXISTS evidence_frames (
    alert_id String,
    camera_id LowCardinality(String),
    frame_id String,
    role LowCardinality(String),
    captured_at DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    width UInt16,
    height UInt16,
    source_width UInt32,
    source_height UInt32,
    image String CODEC(NONE)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(captured_at)
ORDER BY (camera_id, alert_id, frame_id)
TTL toDateTime(captured_at) + INTERVAL {int(ttl_days)} DAY""",
            ),
        ),
        Migration(
            5,
            "evidence frames: edge cases (reason and score)",
            (
                """
ALTER TABLE evidence_frames
    ADD COLUMN IF NOT EXISTS reason LowCardinality(String),
    ADD COLUMN IF NOT EXISTS score Float64""",
            ),
        ),
        Migration(
            6,
            "frame_metrics: outlier score and the monitors' sampled drift statistics, exploded into drift_stats",
            (
                """
ALTER TABLE frame_metrics
    ADD COLUMN IF NOT EXISTS outlier_score Nullable(Float32),
    ADD COLUMN IF NOT EXISTS drift Nested(
        detector LowCardinality(String),
        signal LowCardinality(String),
        statistic Float64,
        threshold Float64,
        drifted Bool,
        window UInt32
    )""",
                # One drift_stats row per sampled statistic, keyed by the frame's capture time: a replayed
                # frame gives the same key, which the table's Replacing engine folds.
                f"CREATE MATERIALIZED VIEW IF NOT EXISTS drift_stats_sampled_mv TO drift_stats AS {SAMPLED_SELECT}",
            ),
        ),
    ]


def _migrations_7_to_9(ttl_days: int) -> list[Migration]:
    return [
        Migration(
            7,
            "camera views: the newest latest and reference view of each camera",
            (
                # One row per camera and role once merged (the newest capture wins); read with FINAL.
                f"""
CREATE TABLE IF NOT EXISTS camera_views (
    camera_id LowCardinality(String),
    role LowCardinality(String),
    frame_id String,
    captured_at DateTime64(3, 'UTC'),
    width UInt16,
    height UInt16,
    source_width UInt32,
    source_height UInt32,
    image String CODEC(NONE)
) ENGINE = ReplacingMergeTree(captured_at)
ORDER BY (camera_id, role)
TTL toDateTime(captured_at) + INTERVAL {int(ttl_days)} DAY""",
            ),
        ),
        Migration(
            8,
            "skip indexes for look-ups by a key outside the sort key: a frame's predictions, an alert's evidence",
            (
                # The API finds a frame's boxes by camera (the sort key's first column) and frame id, and an
                # alert's evidence by alert id alone: a bloom filter per granule leaves about one granule to
                # read instead of every granule of the camera or the table. MATERIALIZE builds the index of
                # the parts already stored, in the background (a mutation); new parts have it from the start.
                "ALTER TABLE predictions ADD INDEX IF NOT EXISTS frame_id_bloom frame_id "
                "TYPE bloom_filter(0.01) GRANULARITY 1",
                "ALTER TABLE predictions MATERIALIZE INDEX frame_id_bloom",
                "ALTER TABLE evidence_frames ADD INDEX IF NOT EXISTS alert_id_bloom alert_id "
                "TYPE bloom_filter(0.01) GRANULARITY 1",
                "ALTER TABLE evidence_frames MATERIALIZE INDEX alert_id_bloom",
            ),
        ),
        Migration(
            9,
            "alerts: caused_by, the cause a suppressed alert is a symptom of",
            (
                "ALTER TABLE alerts ADD COLUMN IF NOT EXISTS caused_by String DEFAULT ''",
                # A symptom (status suppressed) is a drift or a fault all the same: the views count it as one.
                "DROP VIEW IF EXISTS drift_stats_mv",
                f"CREATE MATERIALIZED VIEW IF NOT EXISTS drift_stats_mv TO drift_stats AS {DRIFT_SELECT}",
                "DROP VIEW IF EXISTS device_health_mv",
                f"CREATE MATERIALIZED VIEW IF NOT EXISTS device_health_mv TO device_health AS {HEALTH_SELECT}",
            ),
        ),
    ]


def _migration_10(ttl_days: int) -> Migration:
    return Migration(
        10,
        "incidents across cameras and the camera inventory",
        (
            # One row per change of an incident (raise, join, resolve), keyed by its event id; the latest state
            # of an incident is argMax(..., changed_at). Its member alerts are the keys of ``members``.
            f"""
CREATE TABLE IF NOT EXISTS incidents (
    event_id String,
    incident_id String,
    status LowCardinality(String),
    kind LowCardinality(String),
    scope String,
    site LowCardinality(String),
    type LowCardinality(String),
    signal LowCardinality(String),
    direction LowCardinality(String),
    cameras Array(String),
    members Map(String, String),
    changed_alert_ids Array(String),
    opened_at DateTime64(3, 'UTC'),
    resolved_at Nullable(DateTime64(3, 'UTC')),
    changed_at DateTime64(3, 'UTC'),
    summary String
) ENGINE = ReplacingMergeTree(changed_at)
PARTITION BY toYYYYMM(opened_at)
ORDER BY (incident_id, event_id)
TTL toDateTime(changed_at) + INTERVAL {int(ttl_days)} DAY""",
            # What each source (a gateway, an operator) says of a camera: one row per camera and source once
            # merged, the newest winning. Never expires: a camera's site is not forgotten for being unchanged.
            """
CREATE TABLE IF NOT EXISTS camera_inventory (
    camera_id LowCardinality(String),
    source LowCardinality(String),
    site LowCardinality(String),
    tags Map(String, String),
    notes String,
    gateway LowCardinality(String),
    updated_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (camera_id, source)""",
        ),
    )


def _migration_11(ttl_days: int) -> Migration:
    return Migration(
        11,
        "acknowledgements and silences of incidents and cameras",
        (
            # Every acknowledgement, silence and lift: who, when, until when.
            f"""
CREATE TABLE IF NOT EXISTS acknowledgements (
    action LowCardinality(String),
    target LowCardinality(String),
    target_id String,
    by String,
    via String,
    at DateTime64(3, 'UTC'),
    until Nullable(DateTime64(3, 'UTC')),
    comment String
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (target, target_id, action, at)
TTL toDateTime(at) + INTERVAL {int(ttl_days)} DAY""",
        ),
    )


DRIFT_SELECT = """
SELECT camera_id, signal, type AS detector, raised_at AS computed_at, window, value AS statistic, threshold,
       status != 'resolved' AS drift, model_name, model_version, alert_id
FROM alerts
WHERE type LIKE '%drift'"""
HEALTH_SELECT = """
SELECT camera_id, raised_at AS observed_at, signal, if(status = 'resolved', 'ok', 'fault') AS status, value,
       threshold, message AS detail, alert_id
FROM alerts
WHERE type = 'device_fault'"""


SAMPLED_SELECT = """
SELECT camera_id, signal, detector, captured_at AS computed_at, window, statistic, threshold, drifted AS drift,
       model_name, model_version, '' AS alert_id
FROM frame_metrics
ARRAY JOIN drift.signal AS signal, drift.detector AS detector, drift.window AS window,
           drift.statistic AS statistic, drift.threshold AS threshold, drift.drifted AS drifted"""


_M2_DETECTIONS_SELECT = """
SELECT camera_id, label, captured_at, frame_id, toUInt16(det_index) AS det_index, processed_at, model_name,
       model_version, class_id, score, x1, y1, x2, y2,
       greatest(x2 - x1, 0) * greatest(y2 - y1, 0) AS area_px
FROM predictions
ARRAY JOIN detections.label AS label, detections.class_id AS class_id, detections.score AS score,
           detections.x1 AS x1, detections.y1 AS y1, detections.x2 AS x2, detections.y2 AS y2,
           arrayEnumerate(detections.label) AS det_index"""
_M2_MINUTE_SELECT = """
SELECT camera_id, toStartOfMinute(toDateTime(captured_at, 'UTC')) AS minute, model_name, model_version,
       count() AS frames, sum(detections) AS detections, sum(bytes) AS bytes,
       sum(toFloat64(brightness)) AS brightness_sum, min(brightness) AS brightness_min,
       max(brightness) AS brightness_max, sum(toFloat64(blur)) AS blur_sum, min(blur) AS blur_min,
       max(blur) AS blur_max, sum(toFloat64(inference_ms)) AS inference_ms_sum,
       quantilesTDigestState(0.5, 0.95, 0.99)(inference_ms) AS inference_ms_q,
       min(captured_at) AS first_at, max(captured_at) AS last_at
FROM frame_metrics
GROUP BY camera_id, minute, model_name, model_version"""
_M2_CAMERAS_SELECT = """
SELECT camera_id, min(captured_at) AS first_seen, max(captured_at) AS last_seen, count() AS frames,
       argMaxState(frame_id, captured_at) AS last_frame_id, argMaxState(model_version, captured_at) AS last_model,
       argMaxState(width, captured_at) AS last_width, argMaxState(height, captured_at) AS last_height,
       argMaxState(brightness, captured_at) AS last_brightness, argMaxState(blur, captured_at) AS last_blur,
       argMaxState(inference_ms, captured_at) AS last_inference_ms,
       argMaxState(detections, captured_at) AS last_detections
FROM frame_metrics
GROUP BY camera_id"""
_M2_MODELS_SELECT = """
SELECT model_name, model_version, min(captured_at) AS first_seen, max(captured_at) AS last_seen,
       count() AS frames, uniqState(camera_id) AS cameras, sum(toFloat64(inference_ms)) AS inference_ms_sum
FROM frame_metrics
GROUP BY model_name, model_version"""
_M2_DRIFT_SELECT = """
SELECT camera_id, signal, type AS detector, raised_at AS computed_at, window, value AS statistic, threshold,
       status = 'raised' AS drift, model_name, model_version, alert_id
FROM alerts
WHERE type LIKE '%drift'"""
_M2_HEALTH_SELECT = """
SELECT camera_id, raised_at AS observed_at, signal, if(status = 'raised', 'fault', 'ok') AS status, value,
       threshold, message AS detail, alert_id
FROM alerts
WHERE type = 'device_fault'"""
_M2_EDGE_SELECT = """
SELECT camera_id, raised_at AS flagged_at, frame_id, type AS reason, signal, value AS score, model_version,
       alert_id
FROM alerts
ARRAY JOIN evidence_frame_ids AS frame_id
WHERE status = 'raised'"""


def _migration_2_detections(ttl_days: int) -> tuple[str, ...]:
    """Migration 2's detections, per-minute and per-camera tables and their views."""

    def ttl(column: str) -> str:
        return f"TTL toDateTime({column}) + INTERVAL {int(ttl_days)} DAY"

    ts = "DateTime64(3, 'UTC') CODEC(Delta, ZSTD)"
    return (
        f"""
CREATE TABLE IF NOT EXISTS detections (
    camera_id LowCardinality(String),
    label LowCardinality(String),
    captured_at {ts},
    frame_id String CODEC(ZSTD),
    det_index UInt16,
    processed_at {ts},
    model_name LowCardinality(String),
    model_version LowCardinality(String),
    class_id UInt16,
    score Float32,
    x1 Float32,
    y1 Float32,
    x2 Float32,
    y2 Float32,
    area_px Float32
) ENGINE = ReplacingMergeTree(processed_at)
PARTITION BY toYYYYMMDD(captured_at)
ORDER BY (camera_id, label, captured_at, frame_id, det_index)
{ttl("captured_at")}""",
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS detections_mv TO detections AS {_M2_DETECTIONS_SELECT}",
        f"""
CREATE TABLE IF NOT EXISTS metrics_minute (
    camera_id LowCardinality(String),
    minute DateTime('UTC') CODEC(Delta, ZSTD),
    model_name LowCardinality(String),
    model_version LowCardinality(String),
    frames SimpleAggregateFunction(sum, UInt64),
    detections SimpleAggregateFunction(sum, UInt64),
    bytes SimpleAggregateFunction(sum, UInt64),
    brightness_sum SimpleAggregateFunction(sum, Float64),
    brightness_min SimpleAggregateFunction(min, Float32),
    brightness_max SimpleAggregateFunction(max, Float32),
    blur_sum SimpleAggregateFunction(sum, Float64),
    blur_min SimpleAggregateFunction(min, Float32),
    blur_max SimpleAggregateFunction(max, Float32),
    inference_ms_sum SimpleAggregateFunction(sum, Float64),
    inference_ms_q AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float32),  -- about 2 KB a row
    first_at SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_at SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (camera_id, minute, model_name, model_version)
{ttl("minute")}
SETTINGS index_granularity = 256""",
        # Small granules: a dashboard reads one camera's hour (60 rows), and every row of a granule read
        # has its t-digest state decoded.
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS metrics_minute_mv TO metrics_minute AS {_M2_MINUTE_SELECT}",
        """
CREATE TABLE IF NOT EXISTS cameras (
    camera_id LowCardinality(String),
    first_seen SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_seen SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    frames SimpleAggregateFunction(sum, UInt64),
    last_frame_id AggregateFunction(argMax, String, DateTime64(3, 'UTC')),
    last_model AggregateFunction(argMax, LowCardinality(String), DateTime64(3, 'UTC')),
    last_width AggregateFunction(argMax, UInt32, DateTime64(3, 'UTC')),
    last_height AggregateFunction(argMax, UInt32, DateTime64(3, 'UTC')),
    last_brightness AggregateFunction(argMax, Float32, DateTime64(3, 'UTC')),
    last_blur AggregateFunction(argMax, Float32, DateTime64(3, 'UTC')),
    last_inference_ms AggregateFunction(argMax, Float32, DateTime64(3, 'UTC')),
    last_detections AggregateFunction(argMax, UInt16, DateTime64(3, 'UTC'))
) ENGINE = AggregatingMergeTree
ORDER BY camera_id""",
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS cameras_mv TO cameras AS {_M2_CAMERAS_SELECT}",
    )


def _migration_2_aggregates(ttl_days: int) -> tuple[str, ...]:
    """Migration 2's model versions, drift, device health and edge cases, and their views."""

    def ttl(column: str) -> str:
        return f"TTL toDateTime({column}) + INTERVAL {int(ttl_days)} DAY"

    ts = "DateTime64(3, 'UTC') CODEC(Delta, ZSTD)"
    return (
        """
CREATE TABLE IF NOT EXISTS model_versions (
    model_name LowCardinality(String),
    model_version LowCardinality(String),
    first_seen SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_seen SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    frames SimpleAggregateFunction(sum, UInt64),
    cameras AggregateFunction(uniq, LowCardinality(String)),
    inference_ms_sum SimpleAggregateFunction(sum, Float64)
) ENGINE = AggregatingMergeTree
ORDER BY (model_name, model_version)""",
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS model_versions_mv TO model_versions AS {_M2_MODELS_SELECT}",
        f"""
CREATE TABLE IF NOT EXISTS drift_stats (
    camera_id LowCardinality(String),
    signal LowCardinality(String),
    detector LowCardinality(String),
    computed_at {ts},
    window UInt32,
    statistic Float64 CODEC(Gorilla, ZSTD),
    threshold Float64 CODEC(Gorilla, ZSTD),
    drift Bool,
    model_name LowCardinality(String),
    model_version LowCardinality(String),
    alert_id String DEFAULT ''
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(computed_at)
ORDER BY (camera_id, signal, computed_at, detector, alert_id)
{ttl("computed_at")}""",
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS drift_stats_mv TO drift_stats AS {_M2_DRIFT_SELECT}",
        f"""
CREATE TABLE IF NOT EXISTS device_health (
    camera_id LowCardinality(String),
    observed_at {ts},
    signal LowCardinality(String),
    status LowCardinality(String),
    value Float64,
    threshold Float64,
    detail String CODEC(ZSTD),
    alert_id String DEFAULT ''
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(observed_at)
ORDER BY (camera_id, signal, observed_at, alert_id)
{ttl("observed_at")}""",
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS device_health_mv TO device_health AS {_M2_HEALTH_SELECT}",
        f"""
CREATE TABLE IF NOT EXISTS edge_cases (
    camera_id LowCardinality(String),
    flagged_at {ts},
    frame_id String CODEC(ZSTD),
    reason LowCardinality(String),
    signal LowCardinality(String),
    score Float64,
    model_version LowCardinality(String),
    alert_id String
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(flagged_at)
ORDER BY (camera_id, flagged_at, frame_id, reason)
{ttl("flagged_at")}""",
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS edge_cases_mv TO edge_cases AS {_M2_EDGE_SELECT}",
    )


def _migration_2(ttl_days: int) -> Migration:
    return Migration(
        2,
        "detections, per-minute and per-camera aggregates, model versions, drift, device health, edge cases",
        (
            *_migration_2_detections(ttl_days),
            *_migration_2_aggregates(ttl_days),
            # Backfill what was stored before the views existed. TRUNCATE first keeps a re-run of an
            # interrupted migration exact; migrations run before the writer starts.
            "TRUNCATE TABLE IF EXISTS detections",
            f"INSERT INTO detections {_M2_DETECTIONS_SELECT}",
            "TRUNCATE TABLE IF EXISTS metrics_minute",
            f"INSERT INTO metrics_minute {_M2_MINUTE_SELECT}",
            "TRUNCATE TABLE IF EXISTS cameras",
            f"INSERT INTO cameras {_M2_CAMERAS_SELECT}",
            "TRUNCATE TABLE IF EXISTS model_versions",
            f"INSERT INTO model_versions {_M2_MODELS_SELECT}",
            "TRUNCATE TABLE IF EXISTS drift_stats",
            f"INSERT INTO drift_stats {_M2_DRIFT_SELECT}",
            "TRUNCATE TABLE IF EXISTS device_health",
            f"INSERT INTO device_health {_M2_HEALTH_SELECT}",
            "TRUNCATE TABLE IF EXISTS edge_cases",
            f"INSERT INTO edge_cases {_M2_EDGE_SELECT}",
        ),
    )


def migrate(store: Store, ttl_days: int | None = None, settings: StoreSettings | None = None) -> list[int]:
    """Apply the migrations not yet recorded, then the TTL and dedup settings; return the versions applied now.

    ``ttl_days`` (the caller's ``CVOPS_TTL_DAYS``) is the default retention; ``settings`` defaults to
    :class:`StoreSettings` read from the environment, whose per-table ``CVOPS_TTL_DAYS_<TABLE>`` win.
    """
    settings = settings or StoreSettings()
    if ttl_days is not None and ttl_days != settings.ttl_days:
        settings = settings.model_copy(update={"ttl_days": ttl_days})
    store.command(
        """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32,
    name String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree ORDER BY version"""
    )
    done = {row[0] for row in store.query("SELECT version FROM schema_migrations FINAL")}
    if not done:  # a fresh store: the tables the writer fills are created as declared now, whole
        for table in TABLES:
            store.command(table.create(settings.ttl_for(table.name)))
    applied = []
    for m in migrations(settings.ttl_days):
        if m.version in done:
            continue
        for statement in m.statements:
            store.command(statement)
        store.insert("schema_migrations", [(m.version, m.name)], ["version", "name"])
        log.info("store migration %d applied: %s", m.version, m.name)
        applied.append(m.version)
    reconcile(store, settings)
    return applied


_TTL_DAYS = re.compile(r"TTL .*?toIntervalDay\((\d+)\)")
_DEDUP_WINDOW = re.compile(r"non_replicated_deduplication_window = (\d+)")


def reconcile(store: Store, settings: StoreSettings) -> list[str]:
    """Bring each table's TTL and dedup window to ``settings``; return the ALTER statements run (none if equal)."""
    engines = dict(store.query("SELECT name, engine_full FROM system.tables WHERE database = currentDatabase()"))
    statements = []
    for table, column in TTL_COLUMNS.items():
        if table not in engines:
            continue
        m = _TTL_DAYS.search(engines[table])
        want = settings.ttl_for(table)
        if m is None or int(m.group(1)) != want:
            statements.append(f"ALTER TABLE {table} MODIFY TTL toDateTime({column}) + INTERVAL {want} DAY")
    for table in DEDUP_TABLES:
        if table not in engines:
            continue
        m = _DEDUP_WINDOW.search(engines[table])
        have = int(m.group(1)) if m else 0
        if have != settings.store_dedup_window:
            window = settings.store_dedup_window
            statements.append(f"ALTER TABLE {table} MODIFY SETTING non_replicated_deduplication_window = {window}")
    for statement in statements:
        # Old parts get the new TTL at their next merge rather than in one heavy mutation now.
        store.command(statement, settings={"materialize_ttl_after_modify": 0})
        log.info("store setting applied: %s", statement)
    return statements
