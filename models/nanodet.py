"""NanoDet-m COCO object detector on ONNX Runtime (numpy + OpenCV pre/post-processing, no framework glue).

The model file and its manifest live in ``models/zoo/nanodet-m/`` (built by ``models/convert_nanodet.sh``).

Example::

    import cv2
    import skimage.data
    from models.nanodet import NanoDet

    detector = NanoDet(intra_op_threads=2)
    frame = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)  # the model expects BGR uint8
    for det in detector.detect([frame])[0]:
        print(det.label, round(det.score, 2), [round(v) for v in det.box])  # person 0.7 [...]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from models.base import OnnxModel
from models.detection import Detection, above, finish, manifest_beside
from models.providers import GpuOptions

ZOO_DIR = Path(__file__).resolve().parent / "zoo" / "nanodet-m"
DEFAULT_PATH = ZOO_DIR / "nanodet-m.onnx"


def load_manifest(path: str | Path = DEFAULT_PATH) -> dict:
    """The manifest.json next to the model file."""
    return manifest_beside(path)


COCO_LABELS: tuple[str, ...] = tuple(load_manifest()["labels"])


class NanoDet(OnnxModel):
    """NanoDet-m: 416x416 stretch-resized BGR input, strides 8/16/32, GFL box distributions (reg_max 10).

    A :class:`models.protocol.Model` (see :class:`models.base.OnnxModel` for what it shares with the other
    families); :meth:`infer` gives [scores_8, boxes_8, scores_16, boxes_16, scores_32, boxes_32]."""

    task = "detection"

    def __init__(
        self,
        path: str | Path = DEFAULT_PATH,
        *,
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
        lanes: int = 1,
        gpu: GpuOptions | None = None,
        score_threshold: float = 0.35,
        iou_threshold: float = 0.6,
        max_detections: int = 100,
    ) -> None:
        manifest = load_manifest(path)
        self.strides: tuple[int, ...] = tuple(manifest["strides"])
        self.reg_max: int = int(manifest["reg_max"])
        self.output_names: list[str] = [
            name
            for s in self.strides
            for name in (manifest["outputs"][str(s)]["scores"], manifest["outputs"][str(s)]["boxes"])
        ]
        super().__init__(
            path,
            manifest,
            run_outputs=self.output_names,
            providers=providers,
            intra_op_threads=intra_op_threads,
            lanes=lanes,
            gpu=gpu,
        )
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.max_detections = max_detections

        self._bins = np.arange(self.reg_max + 1, dtype=np.float32)
        # Cell centres per stride, row-major (index = row * W + col), in 416-space pixels: (i + 0.5) * stride.
        w, h = self.size
        self._centres: list[np.ndarray] = []
        for s in self.strides:
            ys, xs = np.mgrid[0 : h // s, 0 : w // s].astype(np.float32)
            self._centres.append(np.stack([(xs.ravel() + 0.5) * s, (ys.ravel() + 0.5) * s], axis=1))

    def preprocess_into(self, image: np.ndarray, out: np.ndarray) -> None:
        """One BGR uint8 HxWx3 image into ``out``, a [3,416,416] slot of :meth:`new_batch`: stretch resize
        (bilinear), (x - mean) / std."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected HxWx3 BGR, got shape {image.shape}")
        resized = cv2.resize(image, self.size, interpolation=cv2.INTER_LINEAR)
        self._normalise_into(cv2.split(resized), out)

    def postprocess(self, outputs: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]]) -> list[list[Detection]]:
        """Decode, threshold and class-wise NMS. ``sizes`` are the source images' (height, width)."""
        results: list[list[Detection]] = []
        for n, size in enumerate(sizes):
            boxes_l, scores_l, classes_l = [], [], []
            for k, centres in enumerate(self._centres):
                scores, reg = outputs[2 * k][n], outputs[2 * k + 1][n]
                cells, classes = above(scores, self.score_threshold)
                if cells.size == 0:
                    continue
                # Each side (left, top, right, bottom) is a distribution over 0..reg_max bins, in stride units.
                logits = reg[cells].reshape(-1, 4, self.reg_max + 1)
                prob = np.exp(logits - logits.max(axis=2, keepdims=True))
                dist = (prob @ self._bins) / prob.sum(axis=2) * self.strides[k]
                c = centres[cells]
                boxes_l.append(np.concatenate([c - dist[:, :2], c + dist[:, 2:]], axis=1))
                scores_l.append(scores[cells, classes])
                classes_l.append(classes)
            if not boxes_l:
                results.append([])
                continue
            boxes, scores, classes = (np.concatenate(parts) for parts in (boxes_l, scores_l, classes_l))
            results.append(finish(self, boxes, scores, classes, size))
        return results

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Detections per image, best first, boxes in each image's own pixel coordinates: :meth:`predict`."""
        return self.predict(images)
