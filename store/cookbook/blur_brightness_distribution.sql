-- purpose: blur and brightness distributions per camera (5th/25th/50th/75th/95th percentiles, mean) since {since}
SELECT
    camera_id,
    count() AS frames,
    quantilesExact(0.05, 0.25, 0.5, 0.75, 0.95)(brightness) AS brightness_p5_p25_p50_p75_p95,
    avg(brightness) AS brightness_mean,
    quantilesExact(0.05, 0.25, 0.5, 0.75, 0.95)(blur) AS blur_p5_p25_p50_p75_p95,
    avg(blur) AS blur_mean
FROM frame_metrics FINAL
WHERE captured_at >= {since:DateTime64(3, 'UTC')}
GROUP BY camera_id
ORDER BY camera_id
