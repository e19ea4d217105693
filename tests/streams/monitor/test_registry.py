"""Adding a detector is a class and a line in the registry: its alerts, statistics and state come with it."""

from __future__ import annotations

import numpy as np
import pytest

from core.contracts import FrameMetrics
from streams.monitor import camera
from streams.monitor.base import Change, Detector, Frame, alert_id, statistic
from streams.monitor.camera import CameraMonitor, MonitorSettings, restore
from tests.streams.monitor.conftest import through_json

QUIET = MonitorSettings(
    warmup=5, consecutive=3, motion_every=0, ks_reference=0, prediction_reference=0, embedding_reference=0,
    concept_reference=0,
)  # fmt: skip


class Glare(Detector):
    """A toy: ``run`` over-exposed frames in a row raise ``device_fault`` ``glare``; one clear frame clears it."""

    name = "glare"

    def __init__(self, run: int = 0, on: bool = False, limit: int = 3):
        self.run, self.on, self.limit = run, on, limit

    @classmethod
    def new(cls, settings, camera_id):
        return cls(limit=settings.consecutive)

    def observe(self, obs):
        if not isinstance(obs, Frame):
            return []
        self.run = self.run + 1 if obs.over_exposed > 0.5 else 0
        on = self.run >= self.limit
        if on == self.on:
            return []
        self.on = on
        status = "raised" if on else "resolved"
        return [Change("device_fault", "glare", status, float(self.run), float(self.limit), f"{self.run} in a row")]

    def statistics(self):
        return statistic("toy_glare", "over_exposed", float(self.run), float(self.limit), self.on, self.run)

    def configure(self, settings):
        self.limit = settings.consecutive

    def essential(self):
        return self.on

    def to_dict(self):
        return {"run": self.run, "on": self.on, "limit": self.limit}

    @classmethod
    def from_dict(cls, d):
        return cls(int(d["run"]), bool(d["on"]), int(d["limit"]))


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setattr(camera, "DETECTORS", (*camera.DETECTORS, Glare))


def send(monitor: CameraMonitor, seq: int, over_exposed: float):
    t = 1000.0 + seq / 5
    m = FrameMetrics(
        frame_id=f"cam-1:0:{seq}", camera_id="cam-1", seq=seq, captured_at=t, processed_at=t, model_name="m",
        model_version="1", encoding="jpeg", bytes=5000, width=64, height=48, aspect_ratio=64 / 48,
        brightness=120.0 + seq % 3, blur=300.0 + seq % 5, inference_ms=1.0, detections=0, contrast=40.0,
        saturation=60.0, over_exposed=over_exposed, frame_diff=3.0,
    )  # fmt: skip
    small = np.full((48, 64), seq % 250, np.uint8)
    return monitor.observe(m, small, arrived_at=t + 0.05, cooldown_s=0, frame_diff=3.0, black=False,
                           over_exposed=over_exposed)  # fmt: skip


def test_a_registered_detector_raises_plots_and_survives_a_restart(registered):
    monitor = CameraMonitor.new("cam-1", QUIET)
    assert [a for seq in range(10) for a in send(monitor, seq, 0.0)] == []
    alerts = [a for seq in range(10, 13) for a in send(monitor, seq, 0.9)]
    assert [(a.type, a.signal, a.status, a.value, a.threshold) for a in alerts] == [
        ("device_fault", "glare", "raised", 3.0, 3.0)
    ]
    raised = alerts[0]
    assert raised.alert_id == alert_id("cam-1", "device_fault/glare", "cam-1:0:12")
    assert raised.severity == "critical" and raised.evidence_frame_ids == [f"cam-1:0:{k}" for k in range(8, 13)]
    assert raised.message == "device fault raised on camera cam-1: 3 in a row"
    assert [(s.detector, s.signal, s.statistic, s.drift) for s in monitor.statistics()] == [
        ("toy_glare", "over_exposed", 3.0, True)
    ]
    assert monitor.glare.on and monitor.essential()["glare"] is True

    state = through_json(monitor.to_dict())  # a worker restarts: the state comes back from the changelog
    assert state["glare"] == {"run": 3, "on": True, "limit": 3}
    again, restored = restore("cam-1", state, QUIET)
    assert restored and again.glare.to_dict() == monitor.glare.to_dict()
    cleared = send(again, 13, 0.0)
    assert [(a.signal, a.status, a.alert_id) for a in cleared] == [("glare", "resolved", raised.alert_id)]


def test_a_state_saved_before_the_detector_existed_gets_it_new(registered):
    monitor = CameraMonitor.new("cam-1", QUIET)
    for seq in range(10):
        send(monitor, seq, 0.0)
    old = through_json(monitor.to_dict())
    del old["glare"]
    again, restored = restore("cam-1", old, MonitorSettings(consecutive=2))
    assert restored and again.glare.to_dict() == {"run": 0, "on": False, "limit": 2}
    assert again.frames == 10


def test_the_registry_names_each_detector_once_and_the_state_keys_are_its_names():
    names = [d.name for d in camera.DETECTORS]
    assert len(names) == len(set(names)) and names[0] == "health"
    state = CameraMonitor.new("cam-1", MonitorSettings()).to_dict()
    assert set(names) <= set(state)
