-- purpose: one camera minute by minute between {since} and {until} (dashboard): frames, fps, means, p99 inference
SELECT
    m.minute AS minute,
    sum(m.frames) AS frames,
    sum(m.frames) / 60 AS fps,
    sum(m.detections) AS detections,
    sum(m.brightness_sum) / sum(m.frames) AS brightness_mean,
    sum(m.blur_sum) / sum(m.frames) AS blur_mean,
    min(m.blur_min) AS blur_min,
    sum(m.inference_ms_sum) / sum(m.frames) AS inference_ms_mean,
    quantilesTDigestMerge(0.5, 0.95, 0.99)(m.inference_ms_q)[3] AS inference_ms_p99
FROM metrics_minute AS m
WHERE m.camera_id = {camera:String}
  AND m.minute >= toStartOfMinute(toDateTime({since:DateTime64(3, 'UTC')}, 'UTC'))
  AND m.minute < {until:DateTime64(3, 'UTC')}
GROUP BY m.minute
ORDER BY m.minute
