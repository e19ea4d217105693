"""Evidence frames of an alert: listed in order, served as JPEG with the model's boxes drawn in, or without."""

from __future__ import annotations

import base64
import time

import cv2
import httpx
import numpy as np

from core.contracts import Detection, Evidence, Prediction, Timings
from store import Store
from store.writer import SINKS, evidence_row, prediction_row


def thumbnail(value: int) -> str:
    return base64.b64encode(cv2.imencode(".jpg", np.full((90, 160, 3), value, np.uint8))[1].tobytes()).decode()


def test_an_alerts_evidence_is_listed_and_served_with_boxes(client: httpx.Client, store: Store, camera: str):
    t = time.time()
    frames = [f"{camera}:0:{i}" for i in range(2)]
    records = [
        Evidence(alert_id=f"{camera}-a", camera_id=camera, frame_id=f, captured_at=t + i, width=160, height=90,
                 source_width=1280, source_height=720, image_b64=thumbnail(40))
        for i, f in enumerate(frames)
    ] + [
        Evidence(alert_id=f"{camera}-a", camera_id=camera, frame_id=f"reference:{camera}-a", role="reference",
                 captured_at=t - 100, width=160, height=90, source_width=1280, source_height=720,
                 image_b64=thumbnail(200)),
    ]  # fmt: skip
    store.insert("evidence_frames", [evidence_row(e) for e in records], SINKS["evidence"].columns)
    box = Detection(label="car", class_id=2, score=0.9, box=(320.0, 180.0, 960.0, 540.0))
    pred = Prediction(
        frame_id=frames[1], camera_id=camera, seq=1, captured_at=t + 1, processed_at=t + 1, model_name="m",
        model_version="1", width=1280, height=720, batch_size=1, detections=[box],
        timings=Timings(queue_ms=1, decode_ms=1, preprocess_ms=1, inference_ms=1, postprocess_ms=1),
    )  # fmt: skip
    store.insert("predictions", [prediction_row(pred)], SINKS["predictions"].columns)

    listed = client.get(f"/api/v1/alerts/{camera}-a/evidence").json()
    assert [(e["frame_id"], e["role"]) for e in listed] == [
        (frames[0], "evidence"), (frames[1], "evidence"), (f"reference:{camera}-a", "reference"),
    ]  # fmt: skip
    with_boxes = client.get(listed[1]["url"])
    plain = client.get(listed[1]["url"], params={"boxes": "false"})
    assert with_boxes.headers["content-type"] == "image/jpeg" and plain.headers["content-type"] == "image/jpeg"
    drawn = cv2.imdecode(np.frombuffer(with_boxes.content, np.uint8), cv2.IMREAD_COLOR)
    bare = cv2.imdecode(np.frombuffer(plain.content, np.uint8), cv2.IMREAD_COLOR)
    assert drawn.shape == bare.shape == (90, 160, 3)
    # The box (320,180)-(960,540) of 1280x720 is (40,22)-(120,67) of the thumbnail: its edge is drawn, the
    # middle is not.
    assert np.abs(drawn[45, 40].astype(int) - bare[45, 40].astype(int)).sum() > 100
    assert np.abs(drawn[45, 80].astype(int) - bare[45, 80].astype(int)).sum() < 30


def test_unknown_or_malformed_evidence_is_a_clear_4xx(client: httpx.Client, camera: str):
    assert client.get(f"/api/v1/alerts/{camera}-none/evidence").json() == []
    r = client.get(f"/api/v1/evidence/{camera}-none/{camera}:0:1.jpg")
    assert r.status_code == 404 and "no evidence frame" in r.json()["detail"]
    assert client.get("/api/v1/evidence/x/..%2F..%2Fetc%2Fpasswd.jpg").status_code in (404, 422)
    assert client.get("/api/v1/evidence/x/a b.jpg").status_code == 422


def test_edge_cases_are_listed_and_exported_as_a_coco_labelling_set(client: httpx.Client, store: Store, camera: str):
    import io
    import json
    import zipfile

    t = time.time()
    edges = [
        Evidence(alert_id=f"{camera}-e{i}", camera_id=camera, frame_id=f"{camera}:0:{i}", role="edge_case",
                 reason=reason, score=score, captured_at=t + i, width=160, height=90, source_width=1280,
                 source_height=720, image_b64=thumbnail(60 + i))
        for i, (reason, score) in enumerate([("low_confidence", 0.41), ("outlier", 3.2)])
    ]  # fmt: skip
    store.insert("evidence_frames", [evidence_row(e) for e in edges], SINKS["evidence"].columns)
    box = Detection(label="person", class_id=0, score=0.41, box=(128.0, 72.0, 256.0, 360.0))
    pred = Prediction(
        frame_id=edges[0].frame_id, camera_id=camera, seq=0, captured_at=t, processed_at=t, model_name="m",
        model_version="1", width=1280, height=720, batch_size=1, detections=[box],
        timings=Timings(queue_ms=1, decode_ms=1, preprocess_ms=1, inference_ms=1, postprocess_ms=1),
    )  # fmt: skip
    store.insert("predictions", [prediction_row(pred)], SINKS["predictions"].columns)

    listed = client.get("/api/v1/edge-cases", params={"camera_id": camera}).json()
    assert [(e["frame_id"], e["reason"]) for e in listed] == [(f"{camera}:0:1", "outlier"),
                                                             (f"{camera}:0:0", "low_confidence")]  # fmt: skip
    only = client.get("/api/v1/edge-cases", params={"camera_id": camera, "reason": "outlier"}).json()
    assert [e["score"] for e in only] == [3.2]
    assert client.get(listed[1]["url"]).headers["content-type"] == "image/jpeg"
    assert client.get("/api/v1/edge-cases", params={"reason": "nope"}).status_code == 422

    r = client.get("/api/v1/edge-cases/export", params={"camera_id": camera})
    assert r.headers["content-type"] == "application/zip"
    z = zipfile.ZipFile(io.BytesIO(r.content))
    coco = json.loads(z.read("annotations.json"))
    assert len(coco["images"]) == 2 and all(z.read(i["file_name"])[:2] == b"\xff\xd8" for i in coco["images"])
    assert coco["categories"] == [{"id": 1, "name": "person"}]
    [ann] = coco["annotations"]
    unsure = next(i for i in coco["images"] if i["cvops"]["frame_id"] == f"{camera}:0:0")
    assert ann["image_id"] == unsure["id"] and ann["bbox"] == [16.0, 9.0, 16.0, 36.0]  # 1280x720 -> 160x90
    picked = client.get("/api/v1/edge-cases/export", params={"camera_id": camera, "edge_case_id": [edges[1].alert_id]})
    coco = json.loads(zipfile.ZipFile(io.BytesIO(picked.content)).read("annotations.json"))
    assert [i["cvops"]["frame_id"] for i in coco["images"]] == [edges[1].frame_id] and coco["annotations"] == []


def test_a_cameras_latest_and_reference_views_are_served_and_dated_in_the_fleet(client, store, camera, now):
    from core.contracts import CameraView
    from store.writer import view_row
    from tests.api.conftest import seed
    from tests.store.records import metrics

    seed(store, [metrics(camera, 0, now - 5)])
    assert client.get(f"/api/v1/cameras/{camera}/view.jpg").status_code == 404  # no view yet
    assert next(c for c in client.get("/api/v1/cameras").json() if c["camera_id"] == camera)["view_at"] is None

    def view(role: str, at: float, value: int) -> CameraView:
        return CameraView(camera_id=camera, role=role, frame_id=f"{camera}:0:{int(at)}", captured_at=at, width=160,
                          height=90, source_width=1280, source_height=720, image_b64=thumbnail(value))  # fmt: skip

    views = [view("latest", now - 40, 30), view("latest", now - 10, 200), view("reference", now - 100, 90)]
    store.insert("camera_views", [view_row(v) for v in views], SINKS["views"].columns)
    summary = next(c for c in client.get("/api/v1/cameras").json() if c["camera_id"] == camera)
    assert (summary["view_at"], summary["reference_view_at"]) == (now - 10, now - 100)
    for role, value in (("latest", 200), ("reference", 90)):
        r = client.get(f"/api/v1/cameras/{camera}/view.jpg", params={"role": role, "boxes": "false"})
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        image = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_GRAYSCALE)
        assert abs(float(image.mean()) - value) < 3  # the newest of its role
    assert client.get(f"/api/v1/cameras/{camera}/view.jpg", params={"role": "sideways"}).status_code == 422
