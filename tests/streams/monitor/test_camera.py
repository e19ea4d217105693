"""The per-camera monitor on real footage: each fault gives one typed alert, and clears with the same id."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from core.contracts import FrameMetrics
from core.monitoring import MonitorSettings
from streams.gateway import default_footage
from streams.monitor import image
from streams.monitor.camera import CameraMonitor, join_reference, split_reference


class Feed:
    """Frames of one camera through a monitor, 5 per second, as the worker would feed them."""

    def __init__(self, settings: MonitorSettings | None = None):
        self.monitor = CameraMonitor.new("cam-1", settings or MonitorSettings(warmup=20, motion_every=0))
        self.seq = 0

    def send(self, frame: np.ndarray, *, t: float | None = None):
        t = 1000.0 + self.seq / 5 if t is None else t
        s = image.measure(frame, self.monitor.previous_small)
        _, jpg = cv2.imencode(".jpg", frame)
        m = FrameMetrics(
            frame_id=f"cam-1:0:{self.seq}", camera_id="cam-1", seq=self.seq, captured_at=t, processed_at=t,
            model_name="m", model_version="1", encoding="jpeg", bytes=len(jpg), width=s.width, height=s.height,
            aspect_ratio=s.aspect_ratio, brightness=s.brightness, blur=s.blur, inference_ms=1.0, detections=0,
        )  # fmt: skip
        self.seq += 1
        return self.monitor.observe(
            m, s.small, arrived_at=t + 0.05, cooldown_s=0, frame_diff=s.frame_diff, black=s.black,
            over_exposed=s.over_exposed,
        )  # fmt: skip


def raised(alerts, kind):
    return [a for a in alerts if a.type == kind and a.status == "raised"]


@pytest.fixture
def frames(street_frames):
    return street_frames[:30]  # one continuous shot of the street footage


def test_a_frozen_feed_is_a_device_fault_raised_once_and_cleared(frames):
    feed = Feed()
    alerts = [a for f in frames for a in feed.send(f)]
    assert raised(alerts, "device_fault") == []
    frozen = [a for _ in range(15) for a in feed.send(frames[-1])]  # the same picture again and again
    faults = raised(frozen, "device_fault")
    assert [a.signal for a in faults] == ["frozen"]
    back = feed.send(frames[0])
    assert [(a.status, a.alert_id) for a in back if a.type == "device_fault"] == [("resolved", faults[0].alert_id)]


def test_a_gateway_halving_the_resolution_is_upstream_drift(frames):
    feed = Feed()
    for f in frames:
        feed.send(f)
    half = [cv2.resize(f, (320, 136)) for f in frames[:5]]
    alerts = [a for f in half for a in feed.send(f)]
    assert "resolution" in {a.signal for a in raised(alerts, "upstream_drift")}
    assert raised(alerts, "domain_drift") == []


@pytest.fixture(scope="module")
def textured_frames():
    """Frames 40-69 of the street footage: a wide shot with enough texture to match features in."""
    cap = cv2.VideoCapture(str(default_footage()))
    frames = [cap.read()[1] for _ in range(70)][40:]
    cap.release()
    return frames


def test_a_turned_camera_is_domain_drift(textured_frames):
    frames = textured_frames
    feed = Feed(MonitorSettings(warmup=20, motion_every=1))
    for f in frames[:10]:
        feed.send(f)
    h, w = frames[0].shape[:2]
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), 6.0, 1.0)
    # The wind turns the camera: the reference view (its first frame), seen 6 degrees round.
    alerts = [a for _ in range(6) for a in feed.send(cv2.warpAffine(frames[0], turn, (w, h)))]
    moved = raised(alerts, "domain_drift")
    assert [a.signal for a in moved] == ["camera_moved"]
    assert abs(abs(moved[0].value) - 6.0) < 1.0  # degrees


def test_silence_is_reported_by_the_timer_and_cleared_once_frames_flow_again(frames):
    feed = Feed()
    for f in frames[:5]:
        feed.send(f)
    last = 1000.0 + 4 / 5
    assert feed.monitor.check_silence(now=last + 59) == []  # silent once: the next check confirms it
    silent = feed.monitor.check_silence(now=last + 60)
    assert [(a.type, a.signal, a.status) for a in silent] == [("device_fault", "no_frames", "raised")]
    assert feed.monitor.check_silence(now=last + 61) == []  # raised once
    back = [a for i, f in enumerate(frames[5:10]) for a in feed.send(f, t=last + 62 + i / 5)]
    assert [(a.signal, a.status, a.alert_id) for a in back] == [("no_frames", "resolved", silent[0].alert_id)]


def test_state_survives_a_round_trip(frames):
    feed = Feed()
    for f in frames:
        feed.send(f)
    again = CameraMonitor.from_dict(feed.monitor.to_dict())
    assert again.essential() == feed.monitor.essential()
    assert again.to_dict() == feed.monitor.to_dict()


def test_a_state_saved_apart_from_its_reference_view_comes_back_whole(textured_frames):
    feed = Feed(MonitorSettings(warmup=20, motion_every=1))
    for f in textured_frames[:10]:
        feed.send(f)
    whole = feed.monitor.to_dict()
    slim, view = split_reference(whole)
    assert view == whole["moved"]["reference_png"] and view is not None
    assert slim["moved"]["reference_png"] is None and view not in json.dumps(slim)
    assert len(json.dumps(slim)) < len(json.dumps(whole)) / 2  # the view is most of a state's bytes
    again = CameraMonitor.from_dict(join_reference(slim, view))
    assert again.to_dict() == whole
    assert np.array_equal(again.moved.reference, feed.monitor.moved.reference)
    # The view lost: the state still loads, and the check takes the next frame as its reference.
    lost = CameraMonitor.from_dict(join_reference(slim, None))
    assert lost.moved.reference is None and lost.frames == feed.monitor.frames
    # A state without a view (the check off) is saved whole, as it is.
    off = Feed().monitor.to_dict()
    assert split_reference(off) == (off, None) and join_reference(off, None) == off


def test_a_moved_cameras_evidence_is_its_last_frames_and_the_reference_view(textured_frames):
    frames = textured_frames
    feed = Feed(MonitorSettings(warmup=20, motion_every=1))
    h, w = frames[0].shape[:2]

    def send(frame: np.ndarray):
        jpeg = cv2.imencode(".jpg", cv2.resize(frame, (160, 90)))[1].tobytes()
        feed.monitor.keep_thumbnail(f"cam-1:0:{feed.seq}", 1000.0 + feed.seq / 5, jpeg, (160, 90), (w, h))
        return feed.send(frame)

    for f in frames[:10]:
        send(f)
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), 6.0, 1.0)
    alerts = [a for _ in range(6) for a in send(cv2.warpAffine(frames[0], turn, (w, h)))]
    (alert,) = raised(alerts, "domain_drift")
    *shots, reference = feed.monitor.evidence(alert)
    assert shots and [e.role for e in shots] == ["evidence"] * len(shots)
    assert [e.frame_id for e in shots] == [f for f in alert.evidence_frame_ids if f in {e.frame_id for e in shots}]
    assert all((e.width, e.height, e.source_width, e.source_height) == (160, 90, w, h) for e in shots)
    ref = feed.monitor.moved.reference
    assert (reference.role, reference.frame_id) == ("reference", f"reference:{alert.alert_id}")
    assert (reference.width, reference.height) == (ref.shape[1], ref.shape[0])
    assert (reference.captured_at, reference.source_width) == (shots[-1].captured_at, w)
    image = cv2.imdecode(np.frombuffer(reference.image(), np.uint8), cv2.IMREAD_GRAYSCALE)
    assert image.shape == ref.shape
