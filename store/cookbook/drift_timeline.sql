-- purpose: drift statistic timeline of one camera: each statistic against its threshold, oldest first
SELECT computed_at, signal, detector, statistic, threshold, drift, window, model_version
FROM drift_stats FINAL
WHERE camera_id = {camera:String}
ORDER BY computed_at, signal, detector
