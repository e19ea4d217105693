"""The distribution, prediction and embedding detectors as the camera monitor wires them: each change gives
one typed alert that clears with the same id, and the state survives a JSON round trip (the changelog)."""

from __future__ import annotations

import json
import random

import numpy as np

from streams.contracts import FrameMetrics
from streams.monitor.camera import CameraMonitor, MonitorSettings

OFF = {"motion_every": 0, "ks_reference": 0, "prediction_reference": 0, "embedding_reference": 0}
SMALL = np.zeros((4, 4), np.uint8)


class Camera:
    def __init__(self, monitor: CameraMonitor):
        self.monitor = monitor
        self.seq = 0

    def send(self, *, brightness=100.0, labels=(), scores=(), embedding=None):
        t = 1000.0 + self.seq / 5
        m = FrameMetrics(
            frame_id=f"cam-1:0:{self.seq}", camera_id="cam-1", seq=self.seq, captured_at=t, processed_at=t,
            model_name="m", model_version="1", encoding="jpeg", bytes=20_000, width=640, height=360,
            aspect_ratio=640 / 360, brightness=brightness, blur=300.0, contrast=40.0, saturation=80.0,
            inference_ms=5.0, detections=len(labels), embedding=embedding,
        )  # fmt: skip
        self.seq += 1
        return self.monitor.observe(
            m, SMALL, arrived_at=t + 0.05, cooldown_s=0, frame_diff=5.0, black=False, over_exposed=0.0,
            labels=list(labels), scores=list(scores),
        )  # fmt: skip


def of(alerts, kind):
    return [(a.status, a.signal, a.alert_id) for a in alerts if a.type == kind]


def test_a_shift_inside_the_normal_range_is_caught_by_the_distribution_test():
    rng = random.Random(1)
    s = MonitorSettings(**{**OFF, "ks_reference": 100}, warmup=20, ks_window=50, ks_every=5)
    cam = Camera(CameraMonitor.new("cam-1", s))
    before = [a for _ in range(150) for a in cam.send(brightness=rng.uniform(90, 110))]
    assert before == []
    # Every frame still inside the range the rule learned (90-110), but all in its upper half now.
    after = [a for _ in range(60) for a in cam.send(brightness=rng.uniform(101, 110))]
    assert of(after, "data_drift") == [("raised", "brightness_distribution", of(after, "data_drift")[0][2])]
    aid = of(after, "data_drift")[0][2]
    back = [a for _ in range(60) for a in cam.send(brightness=rng.uniform(90, 110))]
    assert of(back, "data_drift") == [("resolved", "brightness_distribution", aid)]


def test_a_new_mix_of_classes_is_prediction_drift():
    rng = random.Random(2)
    s = MonitorSettings(**{**OFF, "prediction_reference": 120}, prediction_window=60)
    cam = Camera(CameraMonitor.new("cam-1", s))
    for _ in range(80):
        assert cam.send(labels=rng.choices(["car", "person"], k=2), scores=[0.7, 0.6]) == []
    alerts = [a for _ in range(40) for a in cam.send(labels=rng.choices(["dog", "person"], k=2), scores=[0.7, 0.6])]
    assert [(st, sig) for st, sig, _ in of(alerts, "prediction_drift")] == [("raised", "class_mix")]


def test_frames_unlike_the_reference_embeddings_are_outliers_and_the_state_survives_a_round_trip():
    rng = np.random.default_rng(3)
    basis = rng.normal(size=(5, 128))
    s = MonitorSettings(**{**OFF, "embedding_reference": 60})
    cam = Camera(CameraMonitor.new("cam-1", s))
    for _ in range(120):
        v = rng.normal(size=5) @ basis + 0.1 * rng.normal(size=128)
        assert cam.send(embedding=[float(x) for x in v]) == []
    assert cam.monitor.embedding.fitted

    restored = Camera(CameraMonitor.from_dict(json.loads(json.dumps(cam.monitor.to_dict())), s))
    restored.seq = cam.seq
    odd = [[float(x) for x in 5 * rng.normal(size=128)] for _ in range(3)]
    alerts = [a for v in odd for a in cam.send(embedding=v)]
    again = [a for v in odd for a in restored.send(embedding=v)]
    assert [(st, sig) for st, sig, _ in of(alerts, "outlier")] == [("raised", "embedding_outlier")]
    # The same alert, id included; only the evidence ids, which live in memory alone, differ.
    evidence = {"evidence_frame_ids"}
    assert [a.model_dump(exclude=evidence) for a in again] == [a.model_dump(exclude=evidence) for a in alerts]


def test_a_state_saved_before_the_drift_detectors_existed_gets_them_new():
    s = MonitorSettings(motion_every=0)
    old = CameraMonitor.new("cam-1", MonitorSettings(**OFF)).to_dict()
    for key in ("distributions", "classes", "confidence", "embedding"):
        old.pop(key)
    monitor = CameraMonitor.from_dict(old, s)
    assert monitor.distributions is not None and monitor.classes is not None and monitor.embedding is not None
    assert not monitor.embedding.fitted
