"""The distribution, prediction and embedding detectors as the camera monitor wires them: each change gives
one typed alert that clears with the same id, and the state survives a JSON round trip (the changelog)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from core.contracts import FrameMetrics
from core.monitoring import MonitorSettings
from streams.monitor.camera import CameraMonitor

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
        self.last = m
        return self.monitor.observe(
            m, SMALL, arrived_at=t + 0.05, cooldown_s=0, frame_diff=5.0, black=False, over_exposed=0.0,
            labels=list(labels), scores=list(scores),
        )  # fmt: skip


def of(alerts, kind):
    return [(a.status, a.signal, a.alert_id) for a in alerts if a.type == kind]


def test_a_shift_inside_the_normal_range_is_caught_by_the_distribution_test():
    rng = random.Random(1)
    # A hold-off of 5 s: the clear is sent once it has lasted 5 s (25 frames), with the raise's id.
    s = MonitorSettings(**{**OFF, "ks_reference": 100}, warmup=20, ks_window=50, ks_every=5, alert_holdoff_s=5)
    cam = Camera(CameraMonitor.new("cam-1", s))
    before = [a for _ in range(150) for a in cam.send(brightness=rng.uniform(80, 120))]
    assert before == []
    # Every frame still inside the range the rule learned (80-120), but all in its upper part now: the
    # quartiles moved by 10 % or more (MIN_FACTOR), not only a tail.
    after = [a for _ in range(60) for a in cam.send(brightness=rng.uniform(105, 120))]
    assert of(after, "data_drift") == [("raised", "brightness_distribution", of(after, "data_drift")[0][2])]
    aid = of(after, "data_drift")[0][2]
    back = [a for _ in range(60) for a in cam.send(brightness=rng.uniform(80, 120))]
    assert of(back, "data_drift") == [("resolved", "brightness_distribution", aid)]


def test_a_new_mix_of_classes_is_prediction_drift():
    rng = random.Random(2)
    s = MonitorSettings(
        **{**OFF, "prediction_reference": 120},
        prediction_window=60,
        prediction_reference_frames=60,
        prediction_window_frames=30,
    )
    cam = Camera(CameraMonitor.new("cam-1", s))
    for _ in range(200):
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


def test_sampled_statistics_come_every_few_seconds_from_the_ready_detectors_with_their_thresholds():
    rng = random.Random(4)
    basis = np.random.default_rng(4).normal(size=(5, 64))
    s = MonitorSettings(**{**OFF, "ks_reference": 100, "embedding_reference": 30}, warmup=20, ks_window=50, ks_every=5)
    cam = Camera(CameraMonitor.new("cam-1", s))
    assert cam.monitor.statistics() == []  # nothing learned yet
    sampled: dict[int, dict] = {}

    def run(frames: int, low: float, high: float) -> None:
        for _ in range(frames):
            v = rng.gauss(0, 1) * basis[0] + rng.gauss(0, 1) * basis[1]
            cam.send(brightness=rng.uniform(low, high), embedding=[float(x) for x in v])
            out = cam.monitor.sample(cam.last, every_s=10.0)  # frames are 0.2 s apart: one sample in 50
            if "drift" in out:
                sampled[cam.last.seq] = out
            if cam.monitor.embedding.fitted:  # every embedded frame gets its score once the autoencoder is fitted
                assert out["outlier_score"] == cam.monitor.embedding.score

    run(200, 90, 110)
    # The autoencoder is fitted after 30 embeddings; the KS reference holds 100 frames, its window 50 more.
    assert sorted(sampled) == [50, 100, 150]
    assert {(d.detector, d.signal) for d in sampled[50]["drift"]} == {("autoencoder", "embedding_outlier")}
    assert not [d for d in sampled[100]["drift"] if d.detector == "ks_holm"]
    stats = {d.signal: d for d in sampled[150]["drift"]}
    ks = {k: d for k, d in stats.items() if d.detector == "ks_holm"}
    assert "brightness_distribution" in ks and all(d.window == 50 for d in ks.values())
    # Holm's levels: alpha / m for the smallest p-value, up to alpha for the largest.
    by_p = sorted(ks.values(), key=lambda d: d.statistic)
    assert by_p[0].threshold == pytest.approx(s.ks_alpha / len(by_p)) and by_p[-1].threshold == s.ks_alpha
    ae = stats["embedding_outlier"]
    assert ae.threshold == cam.monitor.embedding.threshold and ae.statistic >= 0
    assert not any(d.drift for d in stats.values())
    # Brightness leaves its reference: the next samples show its p-value under its level, and drift.
    run(150, 140, 160)
    last = sampled[max(sampled)]["drift"]
    (b,) = [d for d in last if d.signal == "brightness_distribution"]
    assert b.drift and b.statistic < b.threshold


def test_the_sampled_outlier_score_is_the_highest_since_the_last_sample():
    s = MonitorSettings(**{**OFF, "embedding_reference": 20})
    cam = Camera(CameraMonitor.new("cam-1", s))
    rng = np.random.default_rng(5)
    basis = rng.normal(size=(3, 32))
    for _ in range(60):
        cam.send(embedding=[float(x) for x in rng.normal(size=3) @ basis])
        cam.monitor.sample(cam.last, every_s=1000.0)  # the first frame samples; then none for 1000 s
    scores = []
    for v in ([0.0] * 32, [float(x) for x in 9 * rng.normal(size=32)], [float(x) for x in rng.normal(size=3) @ basis]):
        cam.send(embedding=v)
        scores.append(cam.monitor.sample(cam.last, every_s=1000.0)["outlier_score"])
    (ae,) = [d for d in cam.monitor.statistics() if d.detector == "autoencoder"]
    assert ae.statistic == max(scores) > scores[-1]


def test_views_give_the_latest_thumbnail_every_few_seconds_and_the_reference_view_once():
    import cv2

    s = MonitorSettings(**{**OFF, "motion_every": 5})
    monitor = CameraMonitor.new("cam-1", s)
    grey = np.random.default_rng(6).integers(0, 255, (90, 160), np.uint8)
    jpeg = cv2.imencode(".jpg", grey)[1].tobytes()
    sent = []
    for i in range(40):  # 0.2 s apart: 8 s of capture
        monitor.keep_thumbnail(f"cam-1:0:{i}", 1000.0 + i / 5, jpeg, (160, 90), (1280, 720))
        if i == 0:
            monitor.moved.update(grey)  # the first frame becomes the reference view
        sent += [(i, v.role) for v in monitor.views(every_s=3.0)]
    assert sent == [(0, "latest"), (0, "reference"), (15, "latest"), (30, "latest")]
    assert monitor.views(every_s=0) == []
