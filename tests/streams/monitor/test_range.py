import random

from core.contracts import FrameMetrics
from streams.monitor.range import CameraHealth, OutOfRange


def metrics(i: int, brightness: float, blur: float, camera: str = "cam-1") -> FrameMetrics:
    return FrameMetrics(
        frame_id=f"{camera}:0:{i}", camera_id=camera, seq=i, captured_at=1000.0 + i, processed_at=1000.0 + i,
        model_name="m", model_version="1", encoding="jpeg", bytes=1, width=640, height=272,
        aspect_ratio=640 / 272, brightness=brightness, blur=blur, inference_ms=10.0, detections=1,
    )  # fmt: skip


def test_out_of_range_stays_quiet_on_a_steady_noisy_stream():
    rng = random.Random(1)
    d = OutOfRange(warmup=60, consecutive=3, min_spread=1.0)
    assert not any(d.update(100 + rng.gauss(0, 3)).drift_detected for _ in range(5000))


def test_out_of_range_flags_a_step_after_consecutive_values():
    d = OutOfRange(warmup=10, consecutive=3, min_spread=1.0)
    for _ in range(50):
        d.update(100.0)
    assert (d.lower, d.upper) == (99.0, 101.0)
    flags = [d.update(50.0).drift_detected for _ in range(5)]
    assert flags == [False, False, True, True, True]
    assert not d.update(100.5).drift_detected  # one value back in range clears it


def test_log_range_follows_factors_not_differences():
    d = OutOfRange(warmup=20, consecutive=1, min_spread=0.5, log=True)
    for i in range(20):
        d.update(100.0 + 100 * (i % 2))  # blur between 100 and 200
    assert not d.update(350.0).drift_detected  # 1.75 times the top: within one spread in log space
    assert d.update(8.0).drift_detected  # a lens gone soft: a factor of twelve down
    assert d.threshold == d.lower < 100


def test_out_of_range_is_silent_while_warming_up():
    d = OutOfRange(warmup=20, consecutive=1)
    for x in [1, 1000, 1, 1000, 5000]:
        assert not d.update(x).drift_detected


def stream(health: CameraHealth, values, start=0, cooldown=60.0):
    alerts = []
    for i, (b, bl) in enumerate(values, start):
        alerts += health.observe(metrics(i, b, bl), cooldown)
    return alerts


def test_camera_health_raises_once_then_resolves():
    rng = random.Random(3)
    h = CameraHealth.new("cam-1", warmup=30, tolerance=1.0, consecutive=3)
    normal = [(120 + rng.gauss(0, 1), 300 + rng.gauss(0, 10)) for _ in range(100)]
    blurry = [(120 + rng.gauss(0, 1), 20 + rng.gauss(0, 2)) for _ in range(30)]
    assert stream(h, normal) == []
    raised = stream(h, blurry, start=100)
    assert [(a.type, a.status, a.signal) for a in raised] == [("data_drift", "raised", "blur")]
    a = raised[0]
    assert a.value < a.threshold < 300 and a.camera_id == "cam-1"
    assert len(a.evidence_frame_ids) == 5 and a.evidence_frame_ids[-1] == "cam-1:0:102"
    resolved = stream(h, normal[:5], start=130)
    assert [(r.status, r.alert_id) for r in resolved] == [("resolved", a.alert_id)]


def test_cooldown_suppresses_a_flapping_signal():
    h = CameraHealth.new("cam-1", warmup=10, tolerance=1.0, consecutive=2)
    normal, dark = [(120.0, 300.0)] * 20, [(20.0, 300.0)] * 5
    stream(h, normal)
    seq = normal[:3] + dark + normal[:3] + dark
    alerts = stream(h, seq, start=20, cooldown=3600)
    assert [(x.status, x.signal) for x in alerts] == [("raised", "brightness"), ("resolved", "brightness")]


def test_state_round_trips_through_a_dict():
    rng = random.Random(5)
    h = CameraHealth.new("cam-2", warmup=10, tolerance=1.0, consecutive=3)
    stream(h, [(100 + rng.gauss(0, 1), 200 + rng.gauss(0, 5)) for _ in range(40)])
    again = CameraHealth.from_dict(h.to_dict())
    assert again.to_dict() == h.to_dict()
    tail = [(30.0, 200.0)] * 4
    assert [a.signal for a in stream(again, tail, 40)] == [a.signal for a in stream(h, tail, 40)] == ["brightness"]


def test_a_replayed_frame_raises_the_same_alert_id():
    rng = random.Random(9)
    normal = [(120 + rng.gauss(0, 1), 300 + rng.gauss(0, 10)) for _ in range(40)]
    h = CameraHealth.new("cam-1", warmup=30, tolerance=1.0, consecutive=3)
    stream(h, normal)
    saved = h.to_dict()
    dark = [(20.0, 300.0)] * 4
    first = stream(h, dark, start=40)
    replayed = stream(CameraHealth.from_dict(saved), dark, start=40)  # a worker restarted from the changelog
    assert [a.alert_id for a in first] == [a.alert_id for a in replayed]
    assert len(first) == 1


def test_events_change_when_the_range_is_learned_and_when_an_alert_is_raised_not_with_every_frame():
    """What the worker writes to its changelog at once: warm-up samples and out-of-range runs are not
    events (they are saved every few frames with the rest of the state)."""
    rng = random.Random(5)
    h = CameraHealth.new("cam-1", warmup=30, tolerance=1.0, consecutive=3)
    seen, full = [], []
    for i in range(60):
        h.observe(metrics(i, 120 + rng.gauss(0, 1), 300 + rng.gauss(0, 10)), cooldown_s=0)
        seen.append(repr(h.events()))
        full.append(repr(h.to_dict()))
    assert len(set(seen)) == 2  # before the range was learned, and after
    assert len(set(full[:30])) == 30  # while the full state changes with every warm-up sample
    before = repr(h.events())
    h.observe(metrics(60, 120, 20), cooldown_s=0)  # one blurry frame: a run of 1, no alert yet
    assert repr(h.events()) == before
    raised = [a for i in range(61, 64) for a in h.observe(metrics(i, 120, 20), cooldown_s=0)]
    assert [a.signal for a in raised] == ["blur"] and repr(h.events()) != before
