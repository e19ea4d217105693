"""YOLO detectors whose heads are decoded inside the ONNX graph (YOLOv4-tiny) on ONNX Runtime.

The graph gives, per image, candidate ``boxes`` [K, 4] (x1, y1, x2, y2 in input pixels) and ``scores`` [K, C]
(objectness x class probability); what is left here is the threshold and the shared last step of every detector
(:func:`models.detection.finish`: scale back, clip, class-wise NMS). The model file and its manifest live in
``models/zoo/yolov4-tiny/`` (built by ``models/convert_yolov4_tiny.sh``).

Example::

    import cv2
    import skimage.data
    from models.yolo import Yolo

    detector = Yolo(intra_op_threads=2)
    frame = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)  # frames are BGR uint8, as for every model
    for det in detector.detect([frame])[0]:
        print(det.label, round(det.score, 2), [round(v) for v in det.box])  # person 0.88 [29, 0, 402, 470]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from models.base import OnnxModel
from models.detection import Detection, above, finish, manifest_beside
from models.providers import GpuOptions

ZOO_DIR = Path(__file__).resolve().parent / "zoo" / "yolov4-tiny"
DEFAULT_PATH = ZOO_DIR / "yolov4-tiny.onnx"


class Yolo(OnnxModel):
    """Stretch-resized input in the manifest's colour order, (x - mean) / std; :meth:`infer` gives
    [boxes, scores], batch-first. Thresholds are Darknet's own defaults (score 0.25, NMS IoU 0.45).

    A :class:`models.protocol.Model` (see :class:`models.base.OnnxModel` for what it shares with the other
    families)."""

    task = "detection"

    def __init__(
        self,
        path: str | Path = DEFAULT_PATH,
        *,
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
        lanes: int = 1,
        gpu: GpuOptions | None = None,
        score_threshold: float = 0.25,
        iou_threshold: float = 0.45,
        max_detections: int = 100,
    ) -> None:
        manifest = manifest_beside(path)
        outputs = manifest["outputs"]
        super().__init__(
            path,
            manifest,
            run_outputs=[outputs["boxes"], outputs["scores"]],
            providers=providers,
            intra_op_threads=intra_op_threads,
            lanes=lanes,
            gpu=gpu,
        )
        self._rgb = manifest["input"]["colour"] == "RGB"
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.max_detections = max_detections

    def preprocess_into(self, image: np.ndarray, out: np.ndarray) -> None:
        """One BGR uint8 HxWx3 image into ``out``, a [3,H,W] slot of :meth:`new_batch`: stretch resize
        (bilinear), planes in the model's colour order, (x - mean) / std."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected HxWx3 BGR, got shape {image.shape}")
        planes = cv2.split(cv2.resize(image, self.size, interpolation=cv2.INTER_LINEAR))
        self._normalise_into(planes[::-1] if self._rgb else planes, out)

    def postprocess(self, outputs: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]]) -> list[list[Detection]]:
        """Threshold and class-wise NMS. ``sizes`` are the source images' (height, width)."""
        boxes, scores = outputs
        results: list[list[Detection]] = []
        for n, size in enumerate(sizes):
            cells, classes = above(scores[n], self.score_threshold)
            results.append(finish(self, boxes[n][cells], scores[n][cells, classes], classes, size))
        return results

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Detections per image, best first, boxes in each image's own pixel coordinates: :meth:`predict`."""
        return self.predict(images)
