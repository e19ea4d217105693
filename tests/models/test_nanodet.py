"""NanoDet-m on real photos and real street footage (no network, no Kafka)."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest
import skimage.data

from models.nanodet import COCO_LABELS, DEFAULT_PATH, NanoDet, load_manifest
from tests.models.footage import assert_batch_gives_what_single_images_give, best, bgr, bikes_frames, contains


@pytest.fixture(scope="module")
def detector() -> NanoDet:
    return NanoDet(intra_op_threads=2)


def test_manifest_sha256_matches_file() -> None:
    manifest = load_manifest()
    digest = hashlib.sha256(DEFAULT_PATH.read_bytes()).hexdigest()
    assert manifest["sha256"] == digest
    assert manifest["name"] == "nanodet-m"
    assert len(COCO_LABELS) == 80 and COCO_LABELS[0] == "person" and COCO_LABELS[15] == "cat"


def test_preprocess_shape_dtype(detector: NanoDet) -> None:
    images = [bgr(skimage.data.astronaut()), bgr(skimage.data.coffee())]  # 512x512 and 400x600
    batch = detector.preprocess(images)
    assert batch.shape == (2, 3, 416, 416)
    assert batch.dtype == np.float32 and batch.flags.c_contiguous
    # stretch resize, BGR kept, (x - mean) / std
    resized = cv2.resize(images[1], (416, 416), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    expected = (resized - [103.53, 116.28, 123.675]) / [57.375, 57.12, 58.395]
    np.testing.assert_allclose(batch[1], expected.transpose(2, 0, 1), atol=1e-5)


def test_known_objects_on_photos(detector: NanoDet) -> None:
    astronaut, chelsea = detector.detect([bgr(skimage.data.astronaut()), bgr(skimage.data.chelsea())])
    person = best(astronaut, "person")
    assert person is not None and person.score > 0.4, astronaut
    assert contains(person.box, 200, 300) and person.box[2] < 420  # her torso, not the shuttle on the right
    cat = best(chelsea, "cat")
    assert cat is not None and cat.score > 0.35, chelsea
    assert contains(cat.box, 225, 150)
    for dets, (h, w) in ((astronaut, (512, 512)), (chelsea, (300, 451))):
        for d in dets:
            x1, y1, x2, y2 = d.box
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            assert COCO_LABELS[d.class_id] == d.label


def test_street_footage(detector: NanoDet) -> None:
    frames = bikes_frames({40, 105, 196})
    f40, f105, f196 = detector.detect([frames[40], frames[105], frames[196]])
    man = best(f40, "person")  # a man in a suit on the right half of the frame
    assert man is not None and man.score > 0.4 and contains(man.box, 460, 150), f40
    cyclist = best(f105, "person")  # a cyclist in a helmet, centre right
    assert cyclist is not None and cyclist.score > 0.4 and contains(cyclist.box, 410, 90), f105
    bicycle = best(f196, "bicycle")  # a parked bicycle behind a passer-by
    assert bicycle is not None and bicycle.score > 0.4, f196


def test_batched_equals_single(detector: NanoDet) -> None:
    frames = bikes_frames({40, 105})
    images = [
        bgr(skimage.data.astronaut()),
        bgr(skimage.data.chelsea()),
        bgr(skimage.data.coffee()),
        frames[40],
        frames[105],
    ]
    assert_batch_gives_what_single_images_give(detector, images, score=1e-3, box=0.5)


def test_empty_and_threshold(detector: NanoDet) -> None:
    assert detector.detect([]) == []
    (grey,) = detector.detect([np.full((240, 320, 3), 127, np.uint8)])
    assert all(d.score > detector.score_threshold for d in grey)
    strict = NanoDet(intra_op_threads=1, score_threshold=0.99, max_detections=1)
    assert strict.providers == strict.session.get_providers()
    assert strict.detect([bgr(skimage.data.astronaut())]) == [[]]


def test_filling_a_batch_slot_by_slot_equals_preprocess(detector: NanoDet, street_frames) -> None:
    det = detector
    images = [street_frames[0], street_frames[5][:200, :300]]
    batch = det.new_batch(len(images))
    for image, slot in zip(images, batch, strict=True):
        det.preprocess_into(image, slot)
    assert np.array_equal(batch, det.preprocess(images))
    with pytest.raises(ValueError, match="image 1: expected HxWx3"):
        det.preprocess([images[0], images[0][:, :, 0]])
