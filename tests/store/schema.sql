-- acknowledgements
CREATE TABLE acknowledgements
(
    `action` LowCardinality(String),
    `target` LowCardinality(String),
    `target_id` String,
    `by` String,
    `via` String,
    `at` DateTime64(3, 'UTC'),
    `until` Nullable(DateTime64(3, 'UTC')),
    `comment` String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (target, target_id, action, at)
TTL toDateTime(at) + toIntervalDay(30)
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000

-- alerts
CREATE TABLE alerts
(
    `alert_id` String,
    `status` LowCardinality(String),
    `type` LowCardinality(String),
    `severity` LowCardinality(String),
    `camera_id` LowCardinality(String),
    `signal` LowCardinality(String),
    `value` Float64,
    `threshold` Float64,
    `window` UInt32,
    `model_name` LowCardinality(String),
    `model_version` LowCardinality(String),
    `evidence_frame_ids` Array(String),
    `raised_at` DateTime64(3, 'UTC'),
    `message` String,
    `caused_by` String DEFAULT ''
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(raised_at)
ORDER BY (camera_id, alert_id, status)
TTL toDateTime(raised_at) + toIntervalDay(30)
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000

-- camera_inventory
CREATE TABLE camera_inventory
(
    `camera_id` LowCardinality(String),
    `source` LowCardinality(String),
    `site` LowCardinality(String),
    `tags` Map(String, String),
    `notes` String,
    `gateway` LowCardinality(String),
    `updated_at` DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (camera_id, source)
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000

-- camera_views
CREATE TABLE camera_views
(
    `camera_id` LowCardinality(String),
    `role` LowCardinality(String),
    `frame_id` String,
    `captured_at` DateTime64(3, 'UTC'),
    `width` UInt16,
    `height` UInt16,
    `source_width` UInt32,
    `source_height` UInt32,
    `image` String CODEC(NONE)
)
ENGINE = ReplacingMergeTree(captured_at)
ORDER BY (camera_id, role)
TTL toDateTime(captured_at) + toIntervalDay(30)
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000

-- cameras
CREATE TABLE cameras
(
    `camera_id` LowCardinality(String),
    `first_seen` SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    `last_seen` SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    `frames` SimpleAggregateFunction(sum, UInt64),
    `last_frame_id` AggregateFunction(argMax, String, DateTime64(3, 'UTC')),
    `last_model` AggregateFunction(argMax, LowCardinality(String), DateTime64(3, 'UTC')),
    `last_width` AggregateFunction(argMax, UInt32, DateTime64(3, 'UTC')),
    `last_height` AggregateFunction(argMax, UInt32, DateTime64(3, 'UTC')),
    `last_brightness` AggregateFunction(argMax, Float32, DateTime64(3, 'UTC')),
    `last_blur` AggregateFunction(argMax, Float32, DateTime64(3, 'UTC')),
    `last_inference_ms` AggregateFunction(argMax, Float32, DateTime64(3, 'UTC')),
    `last_detections` AggregateFunction(argMax, UInt16, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY camera_id
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000

-- cameras_mv
CREATE MATERIALIZED VIEW cameras_mv TO cameras
(
    `camera_id` LowCardinality(String),
    `first_seen` DateTime64(3, 'UTC'),
    `last_seen` DateTime64(3, 'UTC'),
    `frames` UInt64,
    `last_frame_id` AggregateFunction(argMax, String, DateTime64(3, 'UTC')),
    `last_model` AggregateFunction(argMax, String, DateTime64(3, 'UTC')),
    `last_width` AggregateFunction(argMax, UInt32, DateTime64(3, 'UTC')),
    `last_height` AggregateFunction(argMax, UInt32, DateTime64(3, 'UTC')),
    `last_brightness` AggregateFunction(argMax, Float32, DateTime64(3, 'UTC')),
    `last_blur` AggregateFunction(argMax, Float32, DateTime64(3, 'UTC')),
    `last_inference_ms` AggregateFunction(argMax, Float32, DateTime64(3, 'UTC')),
    `last_detections` AggregateFunction(argMax, UInt16, DateTime64(3, 'UTC'))
)
AS SELECT
    camera_id,
    min(captured_at) AS first_seen,
    max(captured_at) AS last_seen,
    count() AS frames,
    argMaxState(frame_id, captured_at) AS last_frame_id,
    argMaxState(model_version, captured_at) AS last_model,
    argMaxState(width, captured_at) AS last_width,
    argMaxState(height, captured_at) AS last_height,
    argMaxState(brightness, captured_at) AS last_brightness,
    argMaxState(blur, captured_at) AS last_blur,
    argMaxState(inference_ms, captured_at) AS last_inference_ms,
    argMaxState(detections, captured_at) AS last_detections
FROM frame_metrics
GROUP BY camera_id

-- dead_letters
CREATE TABLE dead_letters
(
    `source_topic` LowCardinality(String),
    `partition` UInt32,
    `offset` UInt64,
    `key` String,
    `reason` LowCardinality(String),
    `detail` String,
    `payload_bytes` UInt32,
    `received_at` DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (source_topic, partition, offset)
TTL toDateTime(received_at) + toIntervalDay(30)
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000

-- detections
CREATE TABLE detections
(
    `camera_id` LowCardinality(String),
    `label` LowCardinality(String),
    `captured_at` DateTime64(3, 'UTC') CODEC(Delta(8), ZSTD(1)),
    `frame_id` String CODEC(ZSTD(1)),
    `det_index` UInt16,
    `processed_at` DateTime64(3, 'UTC') CODEC(Delta(8), ZSTD(1)),
    `model_name` LowCardinality(String),
    `model_version` LowCardinality(String),
    `class_id` UInt16,
    `score` Float32,
    `x1` Float32,
    `y1` Float32,
    `x2` Float32,
    `y2` Float32,
    `area_px` Float32
)
ENGINE = ReplacingMergeTree(processed_at)
PARTITION BY toYYYYMMDD(captured_at)
ORDER BY (camera_id, label, captured_at, frame_id, det_index)
TTL toDateTime(captured_at) + toIntervalDay(30)
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000

-- detections_mv
CREATE MATERIALIZED VIEW detections_mv TO detections
(
    `camera_id` LowCardinality(String),
    `label` LowCardinality(String),
    `captured_at` DateTime64(3, 'UTC'),
    `frame_id` String,
    `det_index` UInt16,
    `processed_at` DateTime64(3, 'UTC'),
    `model_name` LowCardinality(String),
    `model_version` LowCardinality(String),
    `class_id` UInt16,
    `score` Float32,
    `x1` Float32,
    `y1` Float32,
    `x2` Float32,
    `y2` Float32,
    `area_px` Float64
)
AS SELECT
    camera_id,
    label,
    captured_at,
    frame_id,
    toUInt16(det_index) AS det_index,
    processed_at,
    model_name,
    model_version,
    class_id,
    score,
    x1,
    y1,
    x2,
    y2,
    greatest(x2 - x1, 0) * greatest(y2 - y1, 0) AS area_px
FROM predictions
ARRAY JOIN
    detections.label AS label,
    detections.class_id AS class_id,
    detections.score AS score,
    detections.x1 AS x1,
    detections.y1 AS y1,
    detections.x2 AS x2,
    detections.y2 AS y2,
    arrayEnumerate(detections.label) AS det_index

-- device_health
CREATE TABLE device_health
(
    `camera_id` LowCardinality(String),
    `observed_at` DateTime64(3, 'UTC') CODEC(Delta(8), ZSTD(1)),
    `signal` LowCardinality(String),
    `status` LowCardinality(String),
    `value` Float64,
    `threshold` Float64,
    `detail` String CODEC(ZSTD(1)),
    `alert_id` String DEFAULT ''
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(observed_at)
ORDER BY (camera_id, signal, observed_at, alert_id)
TTL toDateTime(observed_at) + toIntervalDay(30)
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000

-- device_health_mv
CREATE MATERIALIZED VIEW device_health_mv TO device_health
(
    `camera_id` LowCardinality(String),
    `observed_at` DateTime64(3, 'UTC'),
    `signal` LowCardinality(String),
    `status` String,
    `value` Float64,
    `threshold` Float64,
    `detail` String,
    `alert_id` String
)
AS SELECT
    camera_id,
    raised_at AS observed_at,
    signal,
    if(status = 'resolved', 'ok', 'fault') AS status,
    value,
    threshold,
    message AS detail,
    alert_id
FROM alerts
WHERE type = 'device_fault'

-- drift_stats
CREATE TABLE drift_stats
(
    `camera_id` LowCardinality(String),
    `signal` LowCardinality(String),
    `detector` LowCardinality(String),
    `computed_at` DateTime64(3, 'UTC') CODEC(Delta(8), ZSTD(1)),
    `window` UInt32,
    `statistic` Float64 CODEC(Gorilla(8), ZSTD(1)),
    `threshold` Float64 CODEC(Gorilla(8), ZSTD(1)),
    `drift` Bool,
    `model_name` LowCardinality(String),
    `model_version` LowCardinality(String),
    `alert_id` String DEFAULT ''
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(computed_at)
ORDER BY (camera_id, signal, computed_at, detector, alert_id)
TTL toDateTime(computed_at) + toIntervalDay(30)
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000

-- drift_stats_mv
CREATE MATERIALIZED VIEW drift_stats_mv TO drift_stats
(
    `camera_id` LowCardinality(String),
    `signal` LowCardinality(String),
    `detector` LowCardinality(String),
    `computed_at` DateTime64(3, 'UTC'),
    `window` UInt32,
    `statistic` Float64,
    `threshold` Float64,
    `drift` LowCardinality(UInt8),
    `model_name` LowCardinality(String),
    `model_version` LowCardinality(String),
    `alert_id` String
)
AS SELECT
    camera_id,
    signal,
    type AS detector,
    raised_at AS computed_at,
    window,
    value AS statistic,
    threshold,
    status != 'resolved' AS drift,
    model_name,
    model_version,
    alert_id
FROM alerts
WHERE type LIKE '%drift'

-- drift_stats_sampled_mv
CREATE MATERIALIZED VIEW drift_stats_sampled_mv TO drift_stats
(
    `camera_id` LowCardinality(String),
    `signal` LowCardinality(String),
    `detector` LowCardinality(String),
    `computed_at` DateTime64(3, 'UTC'),
    `window` UInt32,
    `statistic` Float64,
    `threshold` Float64,
    `drift` Bool,
    `model_name` LowCardinality(String),
    `model_version` LowCardinality(String),
    `alert_id` String
)
AS SELECT
    camera_id,
    signal,
    detector,
    captured_at AS computed_at,
    window,
    statistic,
    threshold,
    drifted AS drift,
    model_name,
    model_version,
    '' AS alert_id
FROM frame_metrics
ARRAY JOIN
    drift.signal AS signal,
    drift.detector AS detector,
    drift.window AS window,
    drift.statistic AS statistic,
    drift.threshold AS threshold,
    drift.drifted AS drifted

-- edge_cases
CREATE TABLE edge_cases
(
    `camera_id` LowCardinality(String),
    `flagged_at` DateTime64(3, 'UTC') CODEC(Delta(8), ZSTD(1)),
    `frame_id` String CODEC(ZSTD(1)),
    `reason` LowCardinality(String),
    `signal` LowCardinality(String),
    `score` Float64,
    `model_version` LowCardinality(String),
    `alert_id` String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(flagged_at)
ORDER BY (camera_id, flagged_at, frame_id, reason)
TTL toDateTime(flagged_at) + toIntervalDay(30)
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000

-- edge_cases_mv
CREATE MATERIALIZED VIEW edge_cases_mv TO edge_cases
(
    `camera_id` LowCardinality(String),
    `flagged_at` DateTime64(3, 'UTC'),
    `frame_id` String,
    `reason` LowCardinality(String),
    `signal` LowCardinality(String),
    `score` Float64,
    `model_version` LowCardinality(String),
    `alert_id` String
)
AS SELECT
    camera_id,
    raised_at AS flagged_at,
    frame_id,
    type AS reason,
    signal,
    value AS score,
    model_version,
    alert_id
FROM alerts
ARRAY JOIN evidence_frame_ids AS frame_id
WHERE status = 'raised'

-- evidence_frames
CREATE TABLE evidence_frames
(
    `alert_id` String,
    `camera_id` LowCardinality(String),
    `frame_id` String,
    `role` LowCardinality(String),
    `captured_at` DateTime64(3, 'UTC') CODEC(Delta(8), ZSTD(1)),
    `width` UInt16,
    `height` UInt16,
    `source_width` UInt32,
    `source_height` UInt32,
    `image` String CODEC(NONE),
    `reason` LowCardinality(String),
    `score` Float64,
    INDEX alert_id_bloom alert_id TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(captured_at)
ORDER BY (camera_id, alert_id, frame_id)
TTL toDateTime(captured_at) + toIntervalDay(30)
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000

-- frame_metrics
CREATE TABLE frame_metrics
(
    `frame_id` String,
    `camera_id` LowCardinality(String),
    `seq` UInt64,
    `captured_at` DateTime64(3, 'UTC') CODEC(Delta(8), ZSTD(1)),
    `processed_at` DateTime64(3, 'UTC') CODEC(Delta(8), ZSTD(1)),
    `model_name` LowCardinality(String),
    `model_version` LowCardinality(String),
    `encoding` LowCardinality(String),
    `bytes` UInt32,
    `width` UInt32,
    `height` UInt32,
    `aspect_ratio` Float32,
    `brightness` Float32,
    `blur` Float32,
    `inference_ms` Float32,
    `detections` UInt16,
    `contrast` Float32,
    `saturation` Float32,
    `under_exposed` Float32,
    `over_exposed` Float32,
    `frame_diff` Nullable(Float32),
    `black` Bool,
    `mean_confidence` Float32,
    `outlier_score` Nullable(Float32),
    `drift.detector` Array(LowCardinality(String)),
    `drift.signal` Array(LowCardinality(String)),
    `drift.statistic` Array(Float64),
    `drift.threshold` Array(Float64),
    `drift.drifted` Array(Bool),
    `drift.window` Array(UInt32)
)
ENGINE = ReplacingMergeTree(processed_at)
PARTITION BY toYYYYMMDD(captured_at)
ORDER BY (camera_id, captured_at, frame_id)
TTL toDateTime(captured_at) + toIntervalDay(30)
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000

-- incidents
CREATE TABLE incidents
(
    `event_id` String,
    `incident_id` String,
    `status` LowCardinality(String),
    `kind` LowCardinality(String),
    `scope` String,
    `site` LowCardinality(String),
    `type` LowCardinality(String),
    `signal` LowCardinality(String),
    `direction` LowCardinality(String),
    `cameras` Array(String),
    `members` Map(String, String),
    `changed_alert_ids` Array(String),
    `opened_at` DateTime64(3, 'UTC'),
    `resolved_at` Nullable(DateTime64(3, 'UTC')),
    `changed_at` DateTime64(3, 'UTC'),
    `summary` String
)
ENGINE = ReplacingMergeTree(changed_at)
PARTITION BY toYYYYMM(opened_at)
ORDER BY (incident_id, event_id)
TTL toDateTime(changed_at) + toIntervalDay(30)
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000

-- metrics_minute
CREATE TABLE metrics_minute
(
    `camera_id` LowCardinality(String),
    `minute` DateTime('UTC') CODEC(Delta(4), ZSTD(1)),
    `model_name` LowCardinality(String),
    `model_version` LowCardinality(String),
    `frames` SimpleAggregateFunction(sum, UInt64),
    `detections` SimpleAggregateFunction(sum, UInt64),
    `bytes` SimpleAggregateFunction(sum, UInt64),
    `brightness_sum` SimpleAggregateFunction(sum, Float64),
    `brightness_min` SimpleAggregateFunction(min, Float32),
    `brightness_max` SimpleAggregateFunction(max, Float32),
    `blur_sum` SimpleAggregateFunction(sum, Float64),
    `blur_min` SimpleAggregateFunction(min, Float32),
    `blur_max` SimpleAggregateFunction(max, Float32),
    `inference_ms_sum` SimpleAggregateFunction(sum, Float64),
    `inference_ms_q` AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float32),
    `first_at` SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    `last_at` SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (camera_id, minute, model_name, model_version)
TTL toDateTime(minute) + toIntervalDay(30)
SETTINGS index_granularity = 256, non_replicated_deduplication_window = 1000

-- metrics_minute_mv
CREATE MATERIALIZED VIEW metrics_minute_mv TO metrics_minute
(
    `camera_id` LowCardinality(String),
    `minute` DateTime('UTC'),
    `model_name` LowCardinality(String),
    `model_version` LowCardinality(String),
    `frames` UInt64,
    `detections` UInt64,
    `bytes` UInt64,
    `brightness_sum` Float64,
    `brightness_min` Float32,
    `brightness_max` Float32,
    `blur_sum` Float64,
    `blur_min` Float32,
    `blur_max` Float32,
    `inference_ms_sum` Float64,
    `inference_ms_q` AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float32),
    `first_at` DateTime64(3, 'UTC'),
    `last_at` DateTime64(3, 'UTC')
)
AS SELECT
    camera_id,
    toStartOfMinute(toDateTime(captured_at, 'UTC')) AS minute,
    model_name,
    model_version,
    count() AS frames,
    sum(detections) AS detections,
    sum(bytes) AS bytes,
    sum(toFloat64(brightness)) AS brightness_sum,
    min(brightness) AS brightness_min,
    max(brightness) AS brightness_max,
    sum(toFloat64(blur)) AS blur_sum,
    min(blur) AS blur_min,
    max(blur) AS blur_max,
    sum(toFloat64(inference_ms)) AS inference_ms_sum,
    quantilesTDigestState(0.5, 0.95, 0.99)(inference_ms) AS inference_ms_q,
    min(captured_at) AS first_at,
    max(captured_at) AS last_at
FROM frame_metrics
GROUP BY
    camera_id,
    minute,
    model_name,
    model_version

-- model_versions
CREATE TABLE model_versions
(
    `model_name` LowCardinality(String),
    `model_version` LowCardinality(String),
    `first_seen` SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    `last_seen` SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    `frames` SimpleAggregateFunction(sum, UInt64),
    `cameras` AggregateFunction(uniq, LowCardinality(String)),
    `inference_ms_sum` SimpleAggregateFunction(sum, Float64)
)
ENGINE = AggregatingMergeTree
ORDER BY (model_name, model_version)
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000

-- model_versions_mv
CREATE MATERIALIZED VIEW model_versions_mv TO model_versions
(
    `model_name` LowCardinality(String),
    `model_version` LowCardinality(String),
    `first_seen` DateTime64(3, 'UTC'),
    `last_seen` DateTime64(3, 'UTC'),
    `frames` UInt64,
    `cameras` AggregateFunction(uniq, String),
    `inference_ms_sum` Float64
)
AS SELECT
    model_name,
    model_version,
    min(captured_at) AS first_seen,
    max(captured_at) AS last_seen,
    count() AS frames,
    uniqState(camera_id) AS cameras,
    sum(toFloat64(inference_ms)) AS inference_ms_sum
FROM frame_metrics
GROUP BY
    model_name,
    model_version

-- predictions
CREATE TABLE predictions
(
    `frame_id` String,
    `camera_id` LowCardinality(String),
    `seq` UInt64,
    `captured_at` DateTime64(3, 'UTC') CODEC(Delta(8), ZSTD(1)),
    `processed_at` DateTime64(3, 'UTC') CODEC(Delta(8), ZSTD(1)),
    `model_name` LowCardinality(String),
    `model_version` LowCardinality(String),
    `width` UInt32,
    `height` UInt32,
    `batch_size` UInt16,
    `queue_ms` Float32,
    `decode_ms` Float32,
    `preprocess_ms` Float32,
    `inference_ms` Float32,
    `postprocess_ms` Float32,
    `detections.label` Array(LowCardinality(String)),
    `detections.class_id` Array(UInt16),
    `detections.score` Array(Float32),
    `detections.x1` Array(Float32),
    `detections.y1` Array(Float32),
    `detections.x2` Array(Float32),
    `detections.y2` Array(Float32),
    INDEX frame_id_bloom frame_id TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ReplacingMergeTree(processed_at)
PARTITION BY toYYYYMMDD(captured_at)
ORDER BY (camera_id, captured_at, frame_id)
TTL toDateTime(captured_at) + toIntervalDay(30)
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000

-- schema_migrations
CREATE TABLE schema_migrations
(
    `version` UInt32,
    `name` String,
    `applied_at` DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY version
SETTINGS index_granularity = 8192
