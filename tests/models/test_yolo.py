"""YOLOv4-tiny on real photos and real street footage (no network, no Kafka), and beside NanoDet-m."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest
import skimage.data

from models import load
from models.agreement import box_iou
from models.detection import manifest_beside
from models.nanodet import COCO_LABELS
from models.yolo import DEFAULT_PATH, Yolo
from tests.models.footage import assert_batch_gives_what_single_images_give, best, bgr, bikes_frames, contains


@pytest.fixture(scope="module")
def detector() -> Yolo:
    return Yolo(intra_op_threads=2)


def test_manifest_matches_the_file_and_names_nanodets_classes() -> None:
    manifest = manifest_beside(DEFAULT_PATH)
    assert manifest["sha256"] == hashlib.sha256(DEFAULT_PATH.read_bytes()).hexdigest()
    assert (manifest["name"], manifest["family"], manifest["task"]) == ("yolov4-tiny", "yolo", "detection")
    # the same 80 classes under the same names as the other detector, so that their boxes can be compared
    assert tuple(manifest["labels"]) == COCO_LABELS


def test_loads_from_the_registry_with_its_thresholds() -> None:
    model = load("yolov4-tiny", extra_dirs="", intra_op_threads=1, score_threshold=0.5)
    assert isinstance(model, Yolo) and (model.name, model.version) == ("yolov4-tiny", "1.0.0")
    assert model.score_threshold == 0.5 and model.iou_threshold == 0.45


def test_preprocess_is_rgb_over_255_stretched(detector: Yolo) -> None:
    images = [bgr(skimage.data.astronaut()), bgr(skimage.data.coffee())]  # 512x512 and 400x600
    batch = detector.preprocess(images)
    assert batch.shape == (2, 3, 416, 416) and batch.dtype == np.float32 and batch.flags.c_contiguous
    resized = cv2.resize(images[1], (416, 416), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    np.testing.assert_allclose(batch[1], resized[:, :, ::-1].transpose(2, 0, 1) / 255.0, atol=1e-6)


def test_known_objects_on_photos(detector: Yolo) -> None:
    astronaut, chelsea = detector.detect([bgr(skimage.data.astronaut()), bgr(skimage.data.chelsea())])
    person = best(astronaut, "person")
    assert person is not None and person.score > 0.8, astronaut
    assert contains(person.box, 200, 300) and person.box[2] < 420  # her, not the shuttle on the right
    assert best(chelsea, "cat") is not None and contains(best(chelsea, "cat").box, 225, 150), chelsea
    for dets, (h, w) in ((astronaut, (512, 512)), (chelsea, (300, 451))):
        for d in dets:
            x1, y1, x2, y2 = d.box
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            assert detector.labels[d.class_id] == d.label and d.score > detector.score_threshold


def test_street_footage(detector: Yolo) -> None:
    frames = bikes_frames({31, 105, 196})
    f31, f105, f196 = detector.detect([frames[31], frames[105], frames[196]])
    cars = [d for d in f31 if d.label == "car"]  # two parked cars at the left edge, behind the man in a suit
    assert len(cars) == 2 and all(d.box[0] < 200 for d in cars), f31
    cyclist = best(f105, "person")  # a cyclist in a helmet, centre right
    assert cyclist is not None and cyclist.score > 0.8 and contains(cyclist.box, 410, 90), f105
    bicycle = best(f196, "bicycle")  # a parked bicycle behind a passer-by, its whole frame
    assert bicycle is not None and bicycle.box[2] - bicycle.box[0] > 250, f196


def test_batched_equals_single(detector: Yolo) -> None:
    frames = bikes_frames({40, 105})
    images = [bgr(skimage.data.astronaut()), bgr(skimage.data.chelsea()), frames[40], frames[105]]
    assert_batch_gives_what_single_images_give(detector, images, score=1e-4, box=0.1)


def test_empty_threshold_and_bad_input(detector: Yolo) -> None:
    assert detector.detect([]) == []
    (grey,) = detector.detect([np.full((240, 320, 3), 127, np.uint8)])
    assert all(d.score > detector.score_threshold for d in grey)
    strict = Yolo(intra_op_threads=1, score_threshold=0.99, max_detections=1)
    assert strict.detect([bgr(skimage.data.astronaut())]) == [[]]
    with pytest.raises(ValueError, match="image 1: expected HxWx3"):
        detector.preprocess([np.zeros((10, 10, 3), np.uint8), np.zeros((10, 10), np.uint8)])


def test_it_finds_the_people_nanodet_finds_on_the_street(detector: Yolo) -> None:
    """The two detectors differ in architecture, not in what a person is: on frames with a clear person, the
    best person of each overlaps the other's by more than half (IoU)."""
    nanodet = load("nanodet-m", extra_dirs="", intra_op_threads=2)
    frames = list(bikes_frames({31, 40, 105}).values())
    for ours, theirs in zip(detector.detect(frames), nanodet.predict(frames), strict=True):
        a, b = best(ours, "person"), best(theirs, "person")
        assert a is not None and b is not None, (ours, theirs)
        assert box_iou([a.box], [b.box])[0, 0] > 0.5, (a, b)
