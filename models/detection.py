"""What every detector family shares after its own decoding: the :class:`Detection` it gives, the search for
(cell, class) pairs above the threshold, and the last step from candidate boxes in the model's input to one
image's detections (scale back, clip, class-wise NMS, best first).

A family decodes its outputs into candidate boxes (x1, y1, x2, y2 in input pixels) with their scores and
classes, then calls :func:`finish`; :class:`models.nanodet.NanoDet` and :class:`models.yolo.Yolo` do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np


@dataclass(frozen=True)
class Detection:
    label: str
    class_id: int
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in source-image pixels


@cache
def manifest_beside(path: str | Path) -> dict:
    """The manifest.json next to a model file."""
    with open(Path(path).with_name("manifest.json")) as f:
        return json.load(f)


def above(scores: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The (cell, class) pairs of a [cells, classes] score matrix above ``threshold``, cell by cell.

    Cells whose best class passes are found first: a nonzero() over every cell x class is most of the cost of
    post-processing, and few cells pass. Same pairs, same order as the full search."""
    candidates = np.flatnonzero(scores.max(axis=1) > threshold)
    if candidates.size == 0:
        return candidates, candidates
    rows, classes = np.nonzero(scores[candidates] > threshold)
    return candidates[rows], classes


class Thresholds(Protocol):
    """What :func:`finish` reads from a detector: its labels, its input size (w, h) and its thresholds."""

    labels: tuple[str, ...]
    size: tuple[int, int]
    score_threshold: float
    iou_threshold: float
    max_detections: int


def finish(
    detector: Thresholds,
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    image_size: tuple[int, int],
) -> list[Detection]:
    """One image's detections from its candidates: ``boxes`` [K, 4] x1, y1, x2, y2 in the detector's input
    (``detector.size`` (w, h)), stretched back to the image (``image_size`` (h, w)) and clipped to it, then
    class-wise NMS (OpenCV's) at the detector's thresholds, best first, at most ``max_detections``."""
    if len(boxes) == 0:
        return []
    (w_in, h_in), (height, width) = detector.size, image_size
    boxes = boxes * np.array([width / w_in, height / h_in] * 2, np.float32)
    np.clip(boxes, 0, [width, height, width, height], out=boxes)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    keep = cv2.dnn.NMSBoxesBatched(
        xywh.astype(np.float64),
        scores.astype(np.float64),
        classes.astype(np.int32),
        detector.score_threshold,
        detector.iou_threshold,
    )
    keep = np.asarray(keep, dtype=np.int64).reshape(-1)
    keep = keep[np.argsort(-scores[keep], kind="stable")][: detector.max_detections]
    return [
        Detection(
            label=detector.labels[int(classes[i])],
            class_id=int(classes[i]),
            score=float(scores[i]),
            box=tuple(float(v) for v in boxes[i]),
        )
        for i in keep
    ]
