-- purpose: frames per second of each camera and its gaps (silences between frames longer than {gap_s} s)
SELECT
    camera_id,
    count() AS frames,
    min(captured_at) AS first_at,
    max(captured_at) AS last_at,
    if(frames > 1, (frames - 1) / (dateDiff('millisecond', first_at, last_at) / 1000), 0) AS fps,
    countIf(gap_s > {gap_s:Float64}) AS gaps,
    max(gap_s) AS longest_gap_s
FROM (
    SELECT
        camera_id,
        captured_at,
        if(
            row_number() OVER w = 1,
            0,
            (toUnixTimestamp64Milli(captured_at) - lagInFrame(toUnixTimestamp64Milli(captured_at)) OVER w) / 1000
        ) AS gap_s
    FROM frame_metrics FINAL
    WHERE captured_at >= {since:DateTime64(3, 'UTC')}
    WINDOW w AS (PARTITION BY camera_id ORDER BY captured_at ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
)
GROUP BY camera_id
ORDER BY camera_id
