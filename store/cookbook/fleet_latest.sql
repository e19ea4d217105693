-- purpose: latest status of every camera (dashboard): last frame, its signals and model, frames stored
SELECT
    camera_id,
    min(first_seen) AS first_seen,
    max(last_seen) AS last_seen,
    sum(frames) AS frames,
    argMaxMerge(last_frame_id) AS last_frame_id,
    argMaxMerge(last_model) AS model_version,
    argMaxMerge(last_width) AS width,
    argMaxMerge(last_height) AS height,
    argMaxMerge(last_brightness) AS brightness,
    argMaxMerge(last_blur) AS blur,
    argMaxMerge(last_inference_ms) AS inference_ms,
    argMaxMerge(last_detections) AS detections
FROM cameras
GROUP BY camera_id
ORDER BY camera_id
