"""Known records for the store tests: valid by default, one keyword away from a bad one."""

from __future__ import annotations

import time
from dataclasses import dataclass

from core.contracts import (
    Alert,
    ClassAgreement,
    Detection,
    FrameMetrics,
    Prediction,
    ShadowPrediction,
    Timings,
    encode_record,
)
from core.settings import Settings
from store.validate import Limits

# Midnight UTC yesterday: whole hours and minutes from T0 are known, and rows are within any TTL.
T0 = float(int(time.time()) // 86400 * 86400 - 86400)


def metrics(camera: str = "cam-1", seq: int = 0, at: float = T0, **changes) -> FrameMetrics:
    fields = dict(
        frame_id=f"{camera}:s:{seq}", camera_id=camera, seq=seq, captured_at=at, processed_at=at + 0.1,
        model_name="nanodet-m", model_version="1", encoding="jpeg", bytes=20_000, width=640, height=360,
        aspect_ratio=640 / 360, brightness=100.0, blur=50.0, inference_ms=20.0, detections=1,
    )  # fmt: skip
    fields.update(changes)
    return FrameMetrics(**fields)


def prediction(camera: str = "cam-1", seq: int = 0, at: float = T0, labels=("person",), **changes) -> Prediction:
    dets = [
        Detection(label=lb, class_id=i, score=0.5 + i / 10, box=(10, 10, 20 + i, 30)) for i, lb in enumerate(labels)
    ]
    fields = dict(
        frame_id=f"{camera}:s:{seq}", camera_id=camera, seq=seq, captured_at=at, processed_at=at + 0.1,
        model_name="nanodet-m", model_version="1", width=640, height=360, batch_size=4, detections=dets,
        timings=Timings(queue_ms=1, decode_ms=2, preprocess_ms=3, inference_ms=20, postprocess_ms=1),
    )  # fmt: skip
    fields.update(changes)
    return Prediction(**fields)


def shadow_prediction(camera: str = "cam-1", seq: int = 0, at: float = T0, **changes) -> ShadowPrediction:
    """YOLOv4-tiny's detections on a frame beside NanoDet-m's: one person matched, one car of its own."""
    champion = prediction(camera, seq, at)
    fields = dict(
        champion.model_dump(), model_name="yolov4-tiny", model_version="1.0.0", champion_name="nanodet-m",
        champion_version="1",
        detections=[Detection(label="person", class_id=0, score=0.6, box=(10, 10, 20, 30)),
                    Detection(label="car", class_id=2, score=0.4, box=(100, 100, 200, 150))],
        agreement=[ClassAgreement(label="car", champion=0, challenger=1, matched=0, score_delta_sum=0.0,
                                  champion_score_sum=0.0, challenger_score_sum=0.4),
                   ClassAgreement(label="person", champion=1, challenger=1, matched=1, score_delta_sum=0.1,
                                  champion_score_sum=0.5, challenger_score_sum=0.6)],
    )  # fmt: skip
    fields.update(changes)
    return ShadowPrediction(**fields)


def alert(camera: str = "cam-1", n: int = 0, at: float = T0, **changes) -> Alert:
    fields = dict(
        alert_id=f"{camera}-a{n}", type="data_drift", camera_id=camera, signal="blur", value=3.0, threshold=2.0,
        window=60, model_name="nanodet-m", model_version="1", evidence_frame_ids=[f"{camera}:s:{n}"],
        raised_at=at, message="blur out of range",
    )  # fmt: skip
    fields.update(changes)
    return Alert(**fields)


SETTINGS = Settings(_env_file=None, topic_prefix="w.", store_batch_rows=50, store_batch_wait_ms=10)
LIMITS = Limits(max_future_s=10 * 365 * 86400.0, max_age_s=10 * 365 * 86400.0)  # T0 stays valid


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


def records_of(topic: str, items, partitions: int = 2, start: int = 0) -> list[Record]:
    out, next_offset = [], {}
    for i, item in enumerate(items):
        p = i % partitions
        offset = next_offset.get(p, start)
        next_offset[p] = offset + 1
        value = item if isinstance(item, bytes) else encode_record(item)
        out.append(Record(SETTINGS.topic(topic), p, offset, b"cam", value))
    return out
