"""Champions and challengers in the worker's batch step, with the real detectors and no Kafka: each camera's frames
go to the model its config assigns, a share to a challenger in shadow, and the figures of agreement are those of
models.agreement on the same boxes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.assignment import sampled
from core.contracts import CameraConfig, ContractError, ModelAssignment, unpack_frame
from core.settings import Settings
from models import load_detector
from models.agreement import agreement
from streams.process import BatchResult, FrameProcessor
from tests.streams.test_process import message

NANODET, YOLO = "nanodet-m@1.0.0", "yolov4-tiny@1.0.0"


@pytest.fixture(scope="module")
def detector():
    return load_detector("nanodet-m", intra_op_threads=2)


@pytest.fixture(scope="module")
def yolo():
    return load_detector("yolov4-tiny", intra_op_threads=2, score_threshold=0.35)


def processor(detector, yolo=None, **settings) -> FrameProcessor:
    """A processor whose registry is the zoo and whose loads of yolov4-tiny give the module's (loaded once)."""
    s = Settings(_env_file=None, embedding_model="", rule_warmup_frames=5, **settings)
    loads = []

    def load(ref: str):
        loads.append(ref)
        return yolo if ref == YOLO and yolo is not None else load_detector(ref, intra_op_threads=2)

    p = FrameProcessor(s, detector, load=load)
    p.loads = loads
    return p


def run(p: FrameProcessor, msgs) -> BatchResult:
    """Route, prepare, start and finish, as the worker's stages do: a BatchResult of every batch."""
    out = BatchResult()
    for model, group in p.route(msgs):
        prepared = p.prepare(group, model)
        started = p.start_inference(prepared)
        one = p.finish(prepared, {}, started.result(timeout=120) if started is not None else None)
        for name in ("predictions", "metrics", "alerts", "dead_letters", "shadow_predictions"):
            getattr(out, name).extend(getattr(one, name))
    return out


def assign(p: FrameProcessor, scope: str, **models) -> BatchResult:
    return p.configure(scope, CameraConfig(scope=scope, models=ModelAssignment(**models)))


def decoded(msg) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(unpack_frame(msg.value).image, np.uint8), cv2.IMREAD_COLOR)


def test_each_camera_goes_to_its_champion_each_model_in_batches_of_its_own(detector, yolo, street_frames):
    p = processor(detector, yolo)
    try:
        assign(p, "cam-y", champion="yolov4-tiny")  # a bare name: its highest version
        msgs = [message(street_frames[i], "cam-y" if i % 2 else "cam-n", i) for i in range(6)]
        groups = p.route(msgs)
        out = run(p, msgs)
    finally:
        p.close()
    assert [(m.name, [x.offset for x in g]) for m, g in groups] == [("nanodet-m", [0] * 3), ("yolov4-tiny", [0] * 3)]
    assert p.loads == [YOLO]  # loaded once, when the record came
    by_camera = {(pr.camera_id, pr.model_name, pr.model_version) for pr in out.predictions}
    assert by_camera == {("cam-n", "nanodet-m", "1.0.0"), ("cam-y", "yolov4-tiny", "1.0.0")}
    assert {(m.camera_id, m.model_name) for m in out.metrics} == {("cam-n", "nanodet-m"), ("cam-y", "yolov4-tiny")}
    for msg, pr in zip([m for m in msgs if m.key == b"cam-y"], [x for x in out.predictions if x.camera_id == "cam-y"],
                       strict=True):  # fmt: skip
        assert [(d.label, round(d.score, 3)) for d in pr.detections] == [
            (d.label, round(d.score, 3)) for d in yolo.predict([decoded(msg)])[0]
        ]
    assert out.shadow_predictions == [] and out.alerts == []


def test_a_site_assignment_reaches_the_cameras_the_inventory_puts_there(detector, yolo, street_frames):
    from core.contracts import CameraInfo, encode_record

    class Record:
        def __init__(self, info: CameraInfo):
            self.key, self.value = f"{info.source}:{info.camera_id}".encode(), encode_record(info)

    p = processor(detector, yolo)
    try:
        p.inventory_record(Record(CameraInfo(camera_id="cam-s", source="gateway", site="north")))
        assign(p, "site:north", champion=YOLO)
        assign(p, "fleet", champion=NANODET)
        assert p.route_of("cam-s").champion == YOLO and p.route_of("cam-t").champion == NANODET
        assign(p, "cam-s", champion=NANODET)  # the camera's own wins
        assert p.route_of("cam-s").champion == NANODET
    finally:
        p.close()


def test_a_record_naming_a_model_the_registry_lacks_is_refused_whole(detector, street_frames):
    p = processor(detector)
    try:
        before = p.route_of("cam-1")
        with pytest.raises(ContractError) as refused:
            assign(p, "cam-1", champion="no-such-model", share=0.5)
        with pytest.raises(ContractError) as not_detector:
            assign(p, "cam-1", challenger="efficientnet-lite0")
        assert p.route_of("cam-1") == before and "cam-1" not in p.configs
        out = run(p, [message(street_frames[0], "cam-1", 0)])
    finally:
        p.close()
    assert refused.value.reason == "unknown_model" and "no-such-model" in refused.value.detail
    assert not_detector.value.reason == "not_a_detector"
    assert [pr.model_name for pr in out.predictions] == ["nanodet-m"]


def test_a_challenger_sees_its_share_of_frames_in_shadow_and_its_agreement_is_the_direct_one(
    detector, yolo, street_frames
):
    p = processor(detector, yolo)
    try:
        assign(p, "fleet", challenger=YOLO, share=0.5)
        msgs = [message(street_frames[i], "cam-1", i, offset=i) for i in range(16)]
        out = run(p, msgs)
    finally:
        p.close()
    picked = [m for m in msgs if sampled(unpack_frame(m.value).header.frame_id, 0.5)]
    assert 0 < len(picked) < len(msgs)
    assert [s.frame_id for s in out.shadow_predictions] == [unpack_frame(m.value).header.frame_id for m in picked]
    # the champion's outputs are the champion's alone
    assert {pr.model_name for pr in out.predictions} == {"nanodet-m"} and len(out.predictions) == 16
    assert {m.model_name for m in out.metrics} == {"nanodet-m"}
    champion = {pr.frame_id: pr for pr in out.predictions}
    for msg, shadow in zip(picked, out.shadow_predictions, strict=True):
        assert (shadow.model_name, shadow.champion_name) == ("yolov4-tiny", "nanodet-m")
        direct = yolo.predict([decoded(msg)])[0]
        assert [(d.label, round(d.score, 3)) for d in shadow.detections] == [
            (d.label, round(d.score, 3)) for d in direct
        ]
        want = agreement(champion[shadow.frame_id].detections, shadow.detections)
        got = {a.label: (a.champion, a.challenger, a.matched, a.score_delta_sum) for a in shadow.agreement}
        assert got == {k: (a.reference, a.candidate, a.matched, a.score_delta_sum) for k, a in want.items()}
        for a in shadow.agreement:
            assert a.champion_score_sum == pytest.approx(
                sum(d.score for d in champion[shadow.frame_id].detections if d.label == a.label)
            )


def broken_model(folder: Path) -> str:
    """A model folder whose manifest is right and whose file ONNX Runtime refuses."""
    zoo = Path(__file__).resolve().parents[2] / "models" / "zoo" / "yolov4-tiny" / "manifest.json"
    manifest = json.loads(zoo.read_text())
    target = folder / "broken-yolo"
    target.mkdir()
    (target / manifest["file"]).write_bytes(b"not an onnx graph")
    import hashlib

    manifest.update(name="broken-yolo", sha256=hashlib.sha256(b"not an onnx graph").hexdigest())
    (target / "manifest.json").write_text(json.dumps(manifest))
    return "broken-yolo@" + manifest["version"]


def test_a_challenger_that_fails_to_load_leaves_the_champion_serving_and_raises_one_alert(
    detector, street_frames, tmp_path
):
    ref = broken_model(tmp_path)
    s = Settings(_env_file=None, embedding_model="", model_dirs=str(tmp_path))
    p = FrameProcessor(s, detector)
    try:
        assign(p, "fleet", challenger=ref, share=1.0)
        first = run(p, [message(street_frames[i], f"cam-{i % 2}", i) for i in range(4)])
        second = run(p, [message(street_frames[i], "cam-0", i) for i in range(4, 6)])
        cleared = assign(p, "fleet", champion=NANODET)  # the broken challenger named no more
    finally:
        p.close()
    faults = [a for a in first.alerts if a.type == "model_fault"]
    assert [(a.signal, a.status, a.camera_id) for a in faults] == [("challenger_load", "raised", "cam-0")]
    assert ref in faults[0].message and "nanodet-m@1.0.0 goes on serving" in faults[0].message
    assert len(first.predictions) == 4 and first.shadow_predictions == []
    assert second.alerts == [] and len(second.predictions) == 2  # one alert, not one per frame
    assert [(a.alert_id, a.status) for a in cleared.alerts] == [(faults[0].alert_id, "resolved")]


def test_after_a_switch_the_model_dependent_references_are_learned_again_and_the_others_kept(
    detector, yolo, street_frames
):
    p = processor(detector, yolo, monitor_prediction_reference=3, monitor_prediction_reference_frames=2)
    try:
        run(p, [message(street_frames[i], "cam-1", i) for i in range(12)])
        monitor = p._monitors["cam-1"]
        kept = {name: monitor.detectors[name] for name in ("health", "feed", "upstream")}
        classes_before = monitor.detectors["classes"]
        assert monitor.model == NANODET and classes_before.inner.ready  # the class mix learned from NanoDet-m
        assign(p, "cam-1", champion=YOLO)
        out = run(p, [message(street_frames[i], "cam-1", i) for i in range(12, 14)])
    finally:
        p.close()
    assert {pr.model_name for pr in out.predictions} == {"yolov4-tiny"}
    assert monitor.model == YOLO and monitor.detectors["classes"] is not classes_before
    assert not monitor.classes.ready  # learning the new model's class mix
    assert all(monitor.detectors[name] is det for name, det in kept.items())
    assert monitor.health.detectors["blur"].ready  # the image's references stand


def test_a_switch_resolves_the_model_alerts_only_and_the_model_is_saved_with_the_state():
    from core.contracts import Alert
    from core.monitoring import MonitorSettings
    from streams.monitor.camera import CameraMonitor

    def alert(kind: str, signal: str) -> Alert:
        return Alert(alert_id=f"{signal}-id", type=kind, camera_id="cam-1", signal=signal, value=1.0, threshold=0.0,
                     window=1, raised_at=1.0, message="")  # fmt: skip

    m = CameraMonitor.new("cam-1", MonitorSettings())
    assert m.switch_model(NANODET, MonitorSettings(), 1.0, ("", "")) == []  # a new monitor takes its model
    m.policy.apply([alert("prediction_drift", "class_mix"), alert("data_drift", "blur")], now=1.0)
    m.active.update({"prediction_drift:class_mix": "class_mix-id", "data_drift:blur": "blur-id"})
    out = m.switch_model(YOLO, MonitorSettings(), 2.0, ("nanodet-m", "1.0.0"))
    assert [(a.alert_id, a.status, a.model_name, a.raised_at) for a in out] == [
        ("class_mix-id", "resolved", "nanodet-m", 2.0)
    ]
    assert set(m.policy.open) == {"data_drift:blur"} and set(m.active) == {"data_drift:blur"}
    assert m.switch_model(YOLO, MonitorSettings(), 3.0, ("yolov4-tiny", "1.0.0")) == []
    assert CameraMonitor.from_dict(json.loads(json.dumps(m.to_dict()))).model == YOLO
