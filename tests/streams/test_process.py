"""The worker's batch step with the real detector, no Kafka."""

import json
import time

import cv2
import numpy as np
import pytest

from core.contracts import FrameHeader, pack_frame, unpack_frame
from core.settings import Settings
from models import load_detector
from streams.gateway import encode
from streams.process import FrameProcessor, RawMessage


@pytest.fixture(scope="module")
def detector():
    return load_detector("nanodet-m", intra_op_threads=2)


@pytest.fixture(scope="module")
def processor(detector):
    p = FrameProcessor(Settings(_env_file=None, rule_warmup_frames=5, rule_consecutive=3), detector)
    yield p
    p.close()


def message(image: np.ndarray, camera: str, seq: int, key: str | None = None, offset: int = 0) -> RawMessage:
    h = FrameHeader(
        frame_id=f"{camera}:1:{seq}", camera_id=camera, seq=seq, captured_at=time.time(),
        width=image.shape[1], height=image.shape[0],
    )  # fmt: skip
    return RawMessage("frames", 0, offset, (key or camera).encode(), pack_frame(h, encode(image, 90)))


def test_batch_predictions_equal_the_detector_on_each_frame(processor, detector, street_frames):
    frames = [street_frames[i] for i in (0, 10, 20, 30, 39)]
    msgs = [message(f, f"cam-{i % 2}", i) for i, f in enumerate(frames)]
    out = processor.process(msgs, {})
    assert [p.frame_id for p in out.predictions] == [f"cam-{i % 2}:1:{i}" for i in range(5)]
    for msg, pred in zip(msgs, out.predictions, strict=True):
        decoded = cv2.imdecode(np.frombuffer(unpack_frame(msg.value).image, np.uint8), cv2.IMREAD_COLOR)
        expected = detector.detect([decoded])[0]
        assert [(d.label, round(d.score, 3)) for d in pred.detections] == [
            (e.label, round(e.score, 3)) for e in expected
        ]
        for d, e in zip(pred.detections, expected, strict=True):
            assert np.allclose(d.box, e.box, atol=0.5)
            x1, y1, x2, y2 = d.box
            assert -1 <= x1 < x2 <= 641 and -1 <= y1 < y2 <= 273  # inside the 640x272 frame
        assert pred.batch_size == 5 and pred.timings.inference_ms > 0
    assert len(out.metrics) == 5 and out.metrics[0].width == 640 and out.metrics[0].height == 272
    assert set(out.states) == {"cam-0", "cam-1"}


def test_bad_frames_become_dead_letters_and_the_rest_goes_on(processor, street_frames):
    good = message(street_frames[0], "cam-1", 0, offset=1)
    wrong_key = message(street_frames[1], "cam-1", 1, key="cam-9", offset=2)
    corrupt = RawMessage("frames", 0, 3, b"cam-1", b"CVF1\x00\x00\x00\x02{}")
    out = processor.process([corrupt, good, wrong_key], {})
    assert [p.frame_id for p in out.predictions] == ["cam-1:1:0"]
    assert [(d.offset, d.reason) for d in out.dead_letters] == [(3, "unknown_schema_version"), (2, "key_mismatch")]


def test_all_bad_batch_produces_only_dead_letters(processor):
    out = processor.process([RawMessage("frames", 1, 7, None, None)], {})
    assert out.predictions == [] and out.metrics == [] and out.states == {}
    assert [d.reason for d in out.dead_letters] == ["empty_message"]


def test_camera_state_carries_over_between_batches(processor, street_frames):
    dark = [cv2.convertScaleAbs(f, alpha=0.2) for f in street_frames[:4]]
    states: dict = {}
    for i in range(0, 8, 2):  # 8 normal frames: the 5-frame reference is learned across batches
        out = processor.process([message(street_frames[j], "cam-7", j) for j in (i, i + 1)], states)
        states.update(out.states)
        assert out.alerts == []
    out = processor.process([message(f, "cam-7", 100 + k) for k, f in enumerate(dark)], states)
    raised = {a.signal for a in out.alerts if a.status == "raised"}
    assert "brightness" in raised  # a darker image is also less sharp: blur may fire too


def test_sampled_frames_carry_an_embedding(detector, street_frames):
    from models import load

    embedder = load("efficientnet-lite0", extra_dirs="", intra_op_threads=2)
    p = FrameProcessor(Settings(_env_file=None, embedding_every=4), detector, embedder=embedder)
    out = p.process([message(street_frames[i], "cam-5", i) for i in range(8)], {})
    with_embedding = [m.seq for m in out.metrics if m.embedding is not None]
    assert with_embedding == [0, 4]
    m = out.metrics[0]
    assert len(m.embedding) == 1280 and m.embedding_model == "efficientnet-lite0@1.0.0"
    assert all(x.embedding_model == "" for x in out.metrics if x.embedding is None)
    p.close()


@pytest.mark.parametrize("decode_threads", [3, 1], ids=["slots-filled-in-parallel", "slots-filled-in-turn"])
def test_a_bad_frame_inside_a_batch_leaves_the_others_detections_unchanged(detector, street_frames, decode_threads):
    p = FrameProcessor(Settings(_env_file=None), detector, decode_threads=decode_threads)
    try:
        frames = [street_frames[i] for i in (3, 13, 23, 33)]
        msgs = [message(f, "cam-5", i, offset=i) for i, f in enumerate(frames)]
        msgs.insert(2, RawMessage("frames", 0, 99, b"cam-5", b"CVF1 not a frame"))
        out = p.process(msgs, {})
    finally:
        p.close()
    assert [d.offset for d in out.dead_letters] == [99]
    assert [pr.seq for pr in out.predictions] == [0, 1, 2, 3]
    for frame, pred in zip(frames, out.predictions, strict=True):
        decoded = cv2.imdecode(np.frombuffer(encode(frame, 90), np.uint8), cv2.IMREAD_COLOR)
        expected = detector.detect([decoded])[0]
        assert [(d.label, round(d.score, 3)) for d in pred.detections] == [
            (e.label, round(e.score, 3)) for e in expected
        ]
        assert pred.timings.preprocess_ms > 0


def test_with_monitoring_off_only_predictions_come_out(detector, street_frames):
    p = FrameProcessor(Settings(_env_file=None, monitoring=False), detector)
    try:
        out = p.process([message(street_frames[i], "cam-7", i) for i in range(3)], {})
    finally:
        p.close()
    assert [pr.seq for pr in out.predictions] == [0, 1, 2]
    assert out.metrics == [] and out.alerts == [] and dict(out.states) == {}


def test_a_raised_alert_comes_with_thumbnails_of_its_evidence_frames(detector, street_frames):
    settings = Settings(_env_file=None, rule_warmup_frames=5, rule_consecutive=2, evidence_width=160)
    p = FrameProcessor(settings, detector)
    try:
        for i in range(8):
            p.process([message(street_frames[i], "cam-3", i)], {})
        blurred = [cv2.GaussianBlur(street_frames[8 + i], (0, 0), 8) for i in range(3)]
        out = [p.process([message(f, "cam-3", 8 + i)], {}) for i, f in enumerate(blurred)]
    finally:
        p.close()
    raised = [a for r in out for a in r.alerts if a.status == "raised" and a.signal == "blur"]
    evidence = [e for r in out for e in r.evidence]
    assert len(raised) == 1 and evidence
    assert {e.alert_id for e in evidence} == {raised[0].alert_id}
    assert [e.frame_id for e in evidence] == raised[0].evidence_frame_ids  # every one still held, in order
    thumb = cv2.imdecode(np.frombuffer(evidence[-1].image(), np.uint8), cv2.IMREAD_COLOR)
    assert thumb.shape[:2] == (evidence[-1].height, evidence[-1].width) and thumb.shape[1] == 160
    assert (evidence[-1].source_width, evidence[-1].source_height) == (640, 272)


def feedback(frame_id: str, camera: str, objects: list[dict], key: str | None = None, offset: int = 0) -> RawMessage:
    value = json.dumps({"schema_version": 1, "frame_id": frame_id, "camera_id": camera, "objects": objects})
    return RawMessage("feedback", 0, offset, (key or camera).encode(), value.encode())


def test_labels_that_stop_agreeing_with_the_model_raise_concept_drift(detector, street_frames):
    settings = Settings(_env_file=None, monitor_concept_reference=20, monitor_ks_reference=0)
    p = FrameProcessor(settings, detector)
    try:
        predictions = [p.process([message(street_frames[i % 40], "cam-8", i)], {}).predictions[0] for i in range(70)]
        agree = [
            feedback(pr.frame_id, "cam-8", [{"label": d.label, "box": list(d.box)} for d in pr.detections], offset=i)
            for i, pr in enumerate(predictions[:30])
        ]
        assert p.feedback(agree, {}).alerts == []
        disagree = [feedback(pr.frame_id, "cam-8", [{"label": "giraffe"}]) for pr in predictions[30:]]
        alerts = p.feedback(disagree, {}).alerts
        late = p.feedback([feedback("cam-8:1:999", "cam-8", []), feedback("cam-8:1:0", "cam-8", [], key="cam-9")], {})
    finally:
        p.close()
    assert [(a.type, a.signal, a.status) for a in alerts] == [("concept_drift", "label_error", "raised")]
    assert alerts[0].value > alerts[0].threshold
    assert [d.reason for d in late.dead_letters] == ["unknown_frame", "key_mismatch"]


def test_config_records_change_a_running_cameras_thresholds_and_relearn_resolves_its_alerts(detector, street_frames):
    from core.contracts import CameraConfig, MonitorOverrides

    p = FrameProcessor(Settings(_env_file=None, rule_warmup_frames=5, rule_consecutive=2), detector)
    try:
        for i in range(8):
            p.process([message(street_frames[i], "cam-4", i)], {})
        blurred = [cv2.GaussianBlur(street_frames[8 + i], (0, 0), 8) for i in range(3)]
        raised = [a for i, f in enumerate(blurred) for a in p.process([message(f, "cam-4", 8 + i)], {}).alerts]
        assert [a.signal for a in raised if a.status == "raised"] == ["blur"]

        out = p.configure("fleet", CameraConfig(scope="fleet", overrides=MonitorOverrides(expected_fps=9.0)))
        out = p.configure("cam-4", CameraConfig(scope="cam-4", overrides=MonitorOverrides(rule_consecutive=7)))
        monitor = p._monitors["cam-4"]
        assert monitor.feed.expected_fps == 9.0 and {r.consecutive for r in monitor.health.detectors.values()} == {7}
        assert out.alerts == [] and "cam-4" in out.essential

        out = p.configure(
            "cam-4", CameraConfig(scope="cam-4", overrides=MonitorOverrides(rule_consecutive=7), relearn_after=1.0)
        )
        again = p.configure(
            "cam-4", CameraConfig(scope="cam-4", overrides=MonitorOverrides(rule_consecutive=7), relearn_after=1.0)
        )
    finally:
        p.close()
    blur = next(a for a in raised if a.signal == "blur")
    assert [(a.alert_id, a.status) for a in out.alerts] == [(blur.alert_id, "resolved")]
    assert again.alerts == []  # the same request, read again (a restart replays the topic): nothing to do
    fresh = p._monitors["cam-4"]
    assert fresh.relearned_at == 1.0 and not fresh.health.detectors["blur"].ready
    assert fresh.frames == 11 and {r.consecutive for r in fresh.health.detectors.values()} == {7}


def test_edge_cases_are_kept_as_thumbnails_at_most_so_many_per_camera_and_hour(detector, street_frames):
    settings = Settings(_env_file=None, edge_case_confidence=1.0, edge_cases_per_hour=2, evidence_width=160)
    p = FrameProcessor(settings, detector)
    try:
        outs = [p.process([message(street_frames[i], "cam-6", i)], {}) for i in range(12)]
    finally:
        p.close()
    with_detections = [o.predictions[0].frame_id for o in outs if o.predictions[0].detections]
    edges = [e for o in outs for e in o.evidence if e.role == "edge_case"]
    assert len(with_detections) > 2, "the footage should give more candidate frames than the hourly cap"
    assert [e.frame_id for e in edges] == with_detections[:2]  # every frame is unsure below 1.0: the first two
    assert {e.reason for e in edges} == {"low_confidence"} and all(0 < e.score < 1 for e in edges)
    assert len({e.alert_id for e in edges}) == 2 and all(e.width == 160 for e in edges)


def test_inference_started_ahead_gives_what_finish_alone_gives(detector, street_frames):
    """The worker starts a batch's inference before the one before is judged, then hands the result to
    finish(): the outputs are those of finish() inferring by itself."""
    msgs = [message(street_frames[i], f"cam-{i % 2}", i) for i in (3, 13, 23, 33)]
    alone = FrameProcessor(Settings(_env_file=None, embedding_model=""), detector)
    ahead = FrameProcessor(Settings(_env_file=None, embedding_model=""), detector)
    try:
        expected = alone.process(msgs, {})
        prepared = ahead.prepare(msgs)
        got = ahead.finish(prepared, {}, ahead.start_inference(prepared).result(timeout=60))
        empty = ahead.prepare([RawMessage("frames", 0, 0, b"cam-1", b"not a frame")])
        assert ahead.start_inference(empty) is None  # nothing left to infer: a dead letter only
    finally:
        alone.close()
        ahead.close()
    assert [p.detections for p in got.predictions] == [p.detections for p in expected.predictions]
    assert all(p.timings.inference_ms > 0 for p in got.predictions)
