-- purpose: aspect-ratio histogram of the fleet (width / height to 2 decimals): frames and cameras per bucket
SELECT
    round(aspect_ratio, 2) AS aspect_ratio,
    count() AS frames,
    uniqExact(camera_id) AS cameras,
    groupUniqArray(concat(toString(width), 'x', toString(height))) AS resolutions
FROM frame_metrics FINAL
GROUP BY aspect_ratio
ORDER BY aspect_ratio
