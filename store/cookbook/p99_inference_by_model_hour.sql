-- purpose: p99 inference latency (ms) by model version and hour, between {since} and {until}
SELECT
    model_name,
    model_version,
    toStartOfHour(captured_at) AS hour,
    count() AS frames,
    quantileExact(0.99)(inference_ms) AS p99_inference_ms
FROM frame_metrics FINAL
WHERE captured_at >= {since:DateTime64(3, 'UTC')} AND captured_at < {until:DateTime64(3, 'UTC')}
GROUP BY model_name, model_version, hour
ORDER BY hour, model_name, model_version
