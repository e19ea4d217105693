"""A worker's own Prometheus metrics, counted from what a batch produced."""

from __future__ import annotations

from core.contracts import Alert, DeadLetter, Prediction, Timings
from streams.process import BatchResult
from streams.prometheus import WorkerMetrics


def prediction(seq: int, batch: int) -> Prediction:
    return Prediction(
        frame_id=f"c:1:{seq}", camera_id="c", seq=seq, captured_at=100.0, processed_at=100.25, model_name="m",
        model_version="1", width=640, height=360, batch_size=batch, detections=[],
        timings=Timings(queue_ms=3.0, decode_ms=4.0, preprocess_ms=1.0, inference_ms=30.0, postprocess_ms=0.5),
    )  # fmt: skip


def test_a_batch_is_counted_in_frames_batch_sizes_stages_latency_and_outcomes():
    m = WorkerMetrics()
    dead = DeadLetter.of("frames", 0, 7, b"c", b"x", ValueError("bad"))
    alert = Alert(
        alert_id="a", type="data_drift", camera_id="c", signal="blur", value=1.0, threshold=2.0, window=5,
        model_name="m", model_version="1", raised_at=100.0, message="blur",
    )  # fmt: skip
    m.observe(BatchResult(predictions=[prediction(0, 2), prediction(1, 2)], dead_letters=[dead], alerts=[alert]))
    get = m.registry.get_sample_value
    assert get("cvops_worker_frames_total") == 2
    assert get("cvops_worker_batch_size_count") == 1 and get("cvops_worker_batch_size_sum") == 2
    assert get("cvops_worker_stage_ms_sum", {"stage": "inference"}) == 60.0
    assert get("cvops_worker_latency_ms_bucket", {"le": "200.0"}) == 0  # 250 ms from capture to prediction
    assert get("cvops_worker_latency_ms_bucket", {"le": "500.0"}) == 2
    assert get("cvops_worker_dead_letters_total", {"reason": "ValueError"}) == 1
    assert get("cvops_worker_alerts_total", {"type": "data_drift", "status": "raised"}) == 1
