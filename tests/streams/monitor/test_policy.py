"""One alert per cause on a camera, and no flapping: the alert policy alone, and as the camera monitor uses it
with synthetic frame metrics (black frames, a turned camera, a halved resolution, a flapping test)."""

from __future__ import annotations

import json
import random

import cv2
import numpy as np
import pytest

from core.contracts import Alert, FrameMetrics
from core.monitoring import MonitorSettings
from streams.gateway import default_footage
from streams.monitor import image
from streams.monitor.camera import CameraMonitor
from streams.monitor.policy import AlertPolicy, explains

SMALL = np.zeros((4, 4), np.uint8)
# Every detector fed by frame metrics on, with small windows; no embeddings, no moved check unless asked.
SETTINGS = MonitorSettings(
    warmup=20, consecutive=3, motion_every=0, ks_reference=60, ks_window=30, ks_every=5, prediction_reference=120,
    prediction_window=60, prediction_reference_frames=60, prediction_window_frames=30, embedding_reference=0,
    concept_reference=0,
)  # fmt: skip


class Camera:
    """A camera's synthetic frames through its monitor, 5 per second."""

    def __init__(self, settings: MonitorSettings = SETTINGS):
        self.monitor = CameraMonitor.new("cam-1", settings)
        self.seq = 0
        self.t = 1000.0
        self.rng = random.Random(5)

    def send(self, *, black=False, brightness=None, blur=None, size=(640, 360), small=SMALL, labels=None, dt=0.2):
        r = self.rng
        w, h = size
        m = FrameMetrics(
            frame_id=f"cam-1:0:{self.seq}", camera_id="cam-1", seq=self.seq, captured_at=self.t,
            processed_at=self.t, model_name="m", model_version="1", encoding="jpeg",
            bytes=300 if black else int(w * h * r.uniform(0.09, 0.11)), width=w, height=h, aspect_ratio=w / h,
            brightness=0.0 if black else brightness if brightness is not None else r.uniform(90, 110),
            blur=0.0 if black else blur if blur is not None else r.uniform(250, 350),
            contrast=0.0 if black else r.uniform(35, 45), saturation=0.0 if black else r.uniform(70, 90),
            inference_ms=5.0, detections=0,
        )  # fmt: skip
        labels = ([] if black else r.choices(["car", "person"], k=2)) if labels is None else labels
        self.seq += 1
        self.t += dt
        return self.monitor.observe(
            m, small, arrived_at=m.captured_at + 0.05, cooldown_s=0, frame_diff=0.0 if black else 5.0,
            black=black, over_exposed=0.0, labels=labels, scores=[0.7] * len(labels),
        )  # fmt: skip

    def run(self, frames: int, **kw) -> list[Alert]:
        return [a for _ in range(frames) for a in self.send(**kw)]


def keys(alerts, status):
    return sorted({f"{a.type}:{a.signal}" for a in alerts if a.status == status})


def test_black_frames_raise_one_alert_and_the_rest_are_its_symptoms():
    cam = Camera()
    assert cam.run(200) == []
    alerts = cam.run(60, black=True)
    assert keys(alerts, "raised") == ["device_fault:black"]
    black = next(a for a in alerts if a.status == "raised")
    symptoms = [a for a in alerts if a.status == "suppressed"]
    # What the six alerts of a black camera were: each is recorded, under the black frames' alert.
    assert {"device_fault:frozen", "data_drift:brightness", "data_drift:blur", "data_drift:brightness_distribution",
            "upstream_drift:bytes_per_pixel"} <= set(keys(alerts, "suppressed"))  # fmt: skip
    assert {a.caused_by for a in symptoms} == {black.alert_id}
    assert all(a.message.startswith("symptom of device_fault:black: ") for a in symptoms)

    # The picture comes back: the fault resolves at once, its symptoms as their detectors clear, each with
    # its own id and still under its cause; none becomes an alert of its own.
    back = cam.run(200)
    assert keys(back, "raised") == []
    assert [a.alert_id for a in back if a.type == "device_fault" and a.signal == "black"] == [black.alert_id]
    assert {a.alert_id for a in back if a.status == "resolved" and a.caused_by} == {a.alert_id for a in symptoms}
    assert cam.monitor.policy.open == {}


def test_a_symptom_that_outlives_its_cause_by_the_hold_off_becomes_an_alert_of_its_own():
    cam = Camera(MonitorSettings(**{**SETTINGS.__dict__, "alert_holdoff_s": 10.0}))
    cam.run(200)
    alerts = cam.run(15, black=True)
    blur = next(a for a in alerts if a.signal == "blur")
    assert blur.status == "suppressed"
    # The feed comes back, but blurred: the blur stays out of range once the black frames have gone.
    back = cam.run(40, blur=20.0)  # 8 s: within the hold-off after the black frames' end
    assert [a for a in back if a.signal == "blur"] == []
    later = cam.run(20, blur=20.0)
    own = [a for a in later if a.signal == "blur"]
    assert [(a.status, a.alert_id, a.caused_by) for a in own] == [("raised", blur.alert_id, "")]
    assert not own[0].message.startswith("symptom")


@pytest.fixture(scope="module")
def views():
    """The analysis copies (grey, small) of frames 40-69 of the street footage, and of the same frames seen by
    a camera turned 6 degrees."""
    cap = cv2.VideoCapture(str(default_footage()))
    frames = [cap.read()[1] for _ in range(70)][40:]
    cap.release()
    h, w = frames[0].shape[:2]
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), 6.0, 1.0)
    return [image.measure(f, None).small for f in frames], [
        image.measure(cv2.warpAffine(f, turn, (w, h)), None).small for f in frames
    ]


def test_a_turned_camera_raises_camera_moved_and_the_distribution_tests_are_its_symptoms(views):
    straight, turned = views
    cam = Camera(MonitorSettings(**{**SETTINGS.__dict__, "motion_every": 1}))
    assert [a for i in range(120) for a in cam.send(small=straight[0])] == []
    # Turned: the reference view seen round, and darker (it faces away from the light now).
    alerts = [a for i in range(40) for a in cam.send(small=turned[0], brightness=cam.rng.uniform(70, 85))]
    assert keys(alerts, "raised") == ["domain_drift:camera_moved"]
    moved = next(a for a in alerts if a.status == "raised")
    assert "data_drift:brightness_distribution" in keys(alerts, "suppressed")
    assert {a.caused_by for a in alerts if a.status == "suppressed"} == {moved.alert_id}


def test_an_upstream_resolution_change_inhibits_what_it_changes():
    cam = Camera()
    cam.run(200)
    # The gateway halves the resolution: the picture is smaller and its edges sharper per pixel.
    alerts = cam.run(40, size=(320, 180), blur=cam.rng.uniform(900, 1000))
    assert keys(alerts, "raised") == ["upstream_drift:resolution"]
    cause = next(a for a in alerts if a.status == "raised")
    assert "data_drift:blur" in keys(alerts, "suppressed")
    assert {a.caused_by for a in alerts if a.status == "suppressed"} == {cause.alert_id}


def test_a_flapping_test_is_one_alert_until_it_stays_clear_for_the_hold_off():
    cam = Camera()
    cam.run(200)
    sent = []
    for _ in range(3):  # drifts, comes back, drifts again: about every 24 s, as class-mix tests did
        sent += cam.run(60, labels=["dog", "dog"])
        sent += cam.run(60)
    flaps = [a for a in sent if a.signal == "class_mix"]
    assert [a.status for a in flaps] == ["raised"]
    # Clear for the whole hold-off (300 s by default): the resolve goes out, with the raise's id and the time
    # the test cleared.
    quiet = cam.run(320, dt=1.0)
    resolved = [a for a in quiet if a.signal == "class_mix"]
    assert [(a.status, a.alert_id) for a in resolved] == [("resolved", flaps[0].alert_id)]
    assert resolved[0].raised_at < cam.t - 300
    # A drift after the hold-off is a new alert.
    again = [a for a in cam.run(60, labels=["dog", "dog"]) if a.signal == "class_mix"]
    assert [a.status for a in again] == ["raised"] and again[0].alert_id != flaps[0].alert_id


def alert(kind: str, signal: str, status: str = "raised", at: float = 0.0) -> Alert:
    return Alert(
        alert_id=f"{kind}/{signal}@{at}", type=kind, status=status, camera_id="c", signal=signal, value=0.0,
        threshold=0.0, window=0, raised_at=at, message=f"{signal} {status}",
    )  # fmt: skip


def test_a_raise_within_the_hold_off_is_the_same_alert_and_after_it_a_new_one():
    p = AlertPolicy(holdoff_s=300)
    first = p.apply([alert("data_drift", "blur_distribution", at=0)], now=0)
    assert p.apply([alert("data_drift", "blur_distribution", "resolved", at=20)], now=20) == []
    assert p.apply([alert("data_drift", "blur_distribution", at=40)], now=40) == []  # the same alert goes on
    assert p.apply([alert("data_drift", "blur_distribution", "resolved", at=60)], now=60) == []
    assert p.tick(now=359) == []
    out = p.tick(now=360)
    assert [(a.status, a.alert_id, a.raised_at) for a in out] == [("resolved", first[0].alert_id, 60)]
    new = p.apply([alert("data_drift", "blur_distribution", at=400)], now=400)
    assert [a.status for a in new] == ["raised"] and new[0].alert_id != first[0].alert_id


def test_faults_resolve_at_once_and_a_cause_settles_first_within_a_frame():
    p = AlertPolicy(holdoff_s=300)
    out = p.apply([alert("device_fault", "frozen"), alert("device_fault", "black")], now=0)
    assert [(a.signal, a.status) for a in out] == [("black", "raised"), ("frozen", "suppressed")]
    out = p.apply(
        [alert("device_fault", "black", "resolved", at=5), alert("device_fault", "frozen", "resolved", at=5)], 5
    )
    assert [(a.signal, a.status, a.caused_by) for a in out] == [
        ("black", "resolved", ""), ("frozen", "resolved", out[0].alert_id),
    ]  # fmt: skip
    # After-effects: a test whose window still holds the black frames is the black frames' symptom too.
    late = p.apply([alert("data_drift", "blur_distribution", at=30)], now=30)
    assert [(a.status, a.caused_by) for a in late] == [("suppressed", out[0].alert_id)]


def test_a_raise_a_building_cause_would_explain_waits_for_it():
    p = AlertPolicy(holdoff_s=300)
    assert p.apply([alert("data_drift", "brightness")], now=0, brewing={"device_fault:black"}) == []
    # The run of black frames broke before it made a fault: the raise goes out as an alert of its own.
    out = p.apply([], now=1, brewing=set())
    assert [(a.signal, a.status, a.caused_by) for a in out] == [("brightness", "raised", "")]


def test_the_rules():
    assert explains("device_fault:black", "device_fault:frozen")
    assert not explains("device_fault:frozen", "device_fault:black")
    assert explains("domain_drift:camera_moved", "data_drift:contrast_distribution")
    assert explains("upstream_drift:resolution", "data_drift:blur")
    assert not explains("upstream_drift:resolution", "data_drift:brightness")
    assert not explains("data_drift:blur", "device_fault:black")
    # the two detectors of one image signal: whichever raises first explains the other, and no other signal
    assert explains("data_drift:brightness", "data_drift:brightness_distribution")
    assert explains("data_drift:brightness_distribution", "data_drift:brightness")
    assert not explains("data_drift:brightness", "data_drift:contrast_distribution")
    # a change of light explains what the model and the sharpness signal do in the dark; a soft lens, contrast
    for light in ("data_drift:brightness", "data_drift:brightness_distribution"):
        assert explains(light, "prediction_drift:class_mix") and explains(light, "data_drift:blur_distribution")
    assert not explains("data_drift:brightness", "data_drift:blur")  # a lens going soft at dusk is still one
    assert explains("data_drift:blur", "data_drift:contrast_distribution")
    assert not explains("data_drift:contrast_distribution", "data_drift:blur")  # a contrast drop is contrast


def test_a_dark_view_s_prediction_drift_is_a_symptom_of_the_light():
    """The light falls and stays down; then what the model finds changes (other classes in the dark): the
    class-mix alert is sent as a symptom of the brightness alert, not as a second cause."""
    cam = Camera()
    cam.run(200)
    sent = cam.run(60, brightness=40.0)
    assert keys(sent, "raised") == ["data_drift:brightness"]
    cause = next(a for a in sent if a.status == "raised")
    sent = cam.run(150, brightness=40.0, labels=["dog", "dog"])
    assert "prediction_drift:class_mix" in keys(sent, "suppressed") and keys(sent, "raised") == [], sent
    assert {a.caused_by for a in sent if a.status == "suppressed"} == {cause.alert_id}


def test_a_dusk_is_one_brightness_alert_the_distribution_test_its_symptom():
    """Light falling slowly to 0.6 and staying there: the range rule and the distribution test both see the
    brightness move; one alert is raised (here the distribution test's, whose window sees the slope first),
    the other detector's is its symptom."""
    cam = Camera()
    cam.run(200)
    sent = []
    for i in range(150):
        level = 100 * (1 - 0.4 * min(i, 50) / 50)
        sent += cam.send(brightness=cam.rng.uniform(level - 10, level + 10))
    both = ["data_drift:brightness", "data_drift:brightness_distribution"]
    raised, suppressed = keys(sent, "raised"), keys(sent, "suppressed")
    assert len(raised) == 1 and sorted(raised + suppressed) == both, sent
    cause = next(a for a in sent if a.status == "raised")
    assert all(a.caused_by == cause.alert_id for a in sent if a.status == "suppressed")


def test_the_policy_state_survives_a_json_round_trip_and_an_older_state_loads_without_it():
    cam = Camera()
    cam.run(200)
    cam.run(15, black=True)
    state = json.loads(json.dumps(cam.monitor.to_dict()))
    again = CameraMonitor.from_dict(state, SETTINGS)
    assert again.to_dict() == cam.monitor.to_dict()
    assert again.policy.open.keys() == cam.monitor.policy.open.keys()
    older = {k: v for k, v in state.items() if k != "policy"}
    assert CameraMonitor.from_dict(older, SETTINGS).policy.open == {}
    # Relearning resolves every open alert with the id (and cause) it was sent with.
    resolved = cam.monitor.resolve_all(2000.0, "m", "1", "relearn")
    sent = {(o.alert.alert_id, o.alert.caused_by) for o in again.policy.open.values()}
    assert {(a.alert_id, a.caused_by) for a in resolved} == sent and any(c for _, c in sent)


def test_the_timer_does_not_release_a_raise_waiting_for_a_cause():
    cam = Camera()
    cam.run(200)
    early = cam.run(5, black=True)  # the range rule fires at 3 dark frames, the black-frame fault at 10
    assert early == [] and "data_drift:brightness" in cam.monitor.policy.waiting
    assert cam.monitor.check_silence(now=cam.t) == []
    later = cam.run(5, black=True)
    assert keys(later, "raised") == ["device_fault:black"] and "data_drift:brightness" in keys(later, "suppressed")


def test_a_silence_explains_the_frame_rate_not_the_picture_that_ends_it():
    """A camera back from a silence with a dark view has a problem of its own: its brightness alert is raised,
    while the frame-rate alerts of the silence are its symptoms."""
    policy = AlertPolicy(holdoff_s=300)
    silence = Alert(alert_id="quiet", type="device_fault", status="raised", camera_id="c", signal="no_frames",
                    value=20.0, threshold=10.0, window=0, raised_at=0.0, message="")  # fmt: skip
    policy.apply([silence], now=0.0)
    dark = Alert(alert_id="dark", type="data_drift", status="raised", camera_id="c", signal="brightness",
                 value=20.0, threshold=50.0, window=60, raised_at=1.0, message="")  # fmt: skip
    slow = dark.model_copy(update={"alert_id": "slow", "type": "device_fault", "signal": "low_fps"})
    out = {a.signal: (a.status, a.caused_by) for a in policy.apply([dark, slow], now=1.0)}
    assert out == {"brightness": ("raised", ""), "low_fps": ("suppressed", "quiet")}
