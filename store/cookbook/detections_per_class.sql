-- purpose: detections per class of one camera since {since}: count, mean score, mean box area (px²)
SELECT label, count() AS detections, avg(score) AS mean_score, avg(area_px) AS mean_area_px
FROM detections FINAL
WHERE camera_id = {camera:String} AND captured_at >= {since:DateTime64(3, 'UTC')}
GROUP BY label
ORDER BY detections DESC, label
