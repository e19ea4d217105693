-- purpose: cameras ranked by alerts raised in the 7 days before {until}, most first
SELECT
    camera_id,
    count() AS alerts,
    countIf(severity = 'critical') AS critical,
    groupUniqArray(type) AS types,
    max(raised_at) AS last_raised_at
FROM alerts FINAL
WHERE status = 'raised'
  AND raised_at >= {until:DateTime64(3, 'UTC')} - INTERVAL 7 DAY
  AND raised_at < {until:DateTime64(3, 'UTC')}
GROUP BY camera_id
ORDER BY alerts DESC, camera_id
