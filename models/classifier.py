"""ImageNet-style classifier with an image embedding, on ONNX Runtime (numpy + OpenCV pre/post-processing).

Generic over a manifest: any ONNX classifier with one NCHW float input, a logits output and (optionally) an
embedding output works, given a ``manifest.json`` next to the model file (see
``models/zoo/efficientnet-lite0/manifest.json``, built with ``models/export_efficientnet_lite0.sh``). The embedding
(EfficientNet-Lite0: the 1280-d pooled features before the classifier head) is what drift monitoring compares.

Example::

    import cv2
    import skimage.data
    from models.classifier import ImageNetClassifier

    classifier = ImageNetClassifier(intra_op_threads=2)
    frame = cv2.cvtColor(skimage.data.chelsea(), cv2.COLOR_RGB2BGR)  # inputs are BGR uint8, like cv2 frames
    result = classifier.classify([frame])[0]
    for label, class_id, prob in result.top:
        print(f"{label} ({class_id}): {prob:.2f}")  # tiger cat (282): 0.4 ...
    print(result.embedding.shape)  # (1280,)

Manifest fields read (all required unless marked optional)::

    name, version, labels[C]
    input.name, input.shape [N|int, 3, H, W], input.layout "NCHW", input.colour "RGB"|"BGR",
    input.resize "stretch"|"centre_crop", input.crop_fraction (optional, centre_crop only, default 0.875),
    input.interpolation (optional) "auto"|"linear"|"cubic"|"area"|"nearest", default "auto"
      ("auto": area when shrinking, cubic when enlarging),
    input.mean[3], input.std[3] (in the model's colour order, 0..255 pixel units),
    outputs.logits (ONNX output name, or {"name": ...}), outputs.embedding (optional, same form)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from models.base import OnnxModel
from models.providers import GpuOptions

ZOO_DIR = Path(__file__).resolve().parent / "zoo" / "efficientnet-lite0"
DEFAULT_PATH = ZOO_DIR / "efficientnet-lite0.onnx"

RESIZE_MODES = ("stretch", "centre_crop")
INTERPOLATIONS = {
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "nearest": cv2.INTER_NEAREST,
}


def load_manifest(path: str | Path = DEFAULT_PATH) -> dict[str, Any]:
    """The manifest.json next to the model file, validated (ValueError on a malformed one)."""
    manifest_path = Path(path).with_name("manifest.json")
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"no manifest.json next to {path} (expected {manifest_path})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{manifest_path}: not valid JSON ({e})") from None
    return validate_manifest(manifest, source=str(manifest_path))


def _output_name(spec: Any, role: str, where: str) -> str:
    name = spec.get("name") if isinstance(spec, dict) else spec
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: outputs.{role} must be an output name or {{'name': ...}}, got {spec!r}")
    return name


def validate_manifest(manifest: dict[str, Any], source: str = "manifest") -> dict[str, Any]:
    """Check the fields ImageNetClassifier relies on; raise ValueError naming the first bad one."""

    def need(obj: dict[str, Any], key: str, prefix: str = "") -> Any:
        if not isinstance(obj, dict) or key not in obj:
            raise ValueError(f"{source}: missing field '{prefix}{key}'")
        return obj[key]

    for key in ("name", "version"):
        if not isinstance(need(manifest, key), str):
            raise ValueError(f"{source}: '{key}' must be a string")
    spec = need(manifest, "input")
    for key in ("name", "shape", "layout", "colour", "resize", "mean", "std"):
        need(spec, key, "input.")
    shape = spec["shape"]
    if (
        not isinstance(shape, list)
        or len(shape) != 4
        or shape[1] != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape[2:])
    ):
        raise ValueError(f"{source}: input.shape must be [N, 3, H, W] with positive integer H, W; got {shape!r}")
    if spec["layout"] != "NCHW":
        raise ValueError(f"{source}: input.layout must be 'NCHW', got {spec['layout']!r}")
    if spec["colour"] not in ("RGB", "BGR"):
        raise ValueError(f"{source}: input.colour must be 'RGB' or 'BGR', got {spec['colour']!r}")
    if spec["resize"] not in RESIZE_MODES:
        raise ValueError(f"{source}: input.resize must be one of {RESIZE_MODES}, got {spec['resize']!r}")
    fraction = spec.get("crop_fraction", 0.875)
    if not isinstance(fraction, int | float) or not 0 < fraction <= 1:
        raise ValueError(f"{source}: input.crop_fraction must be in (0, 1], got {fraction!r}")
    interpolation = spec.get("interpolation", "auto")
    if interpolation != "auto" and interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"{source}: input.interpolation must be 'auto' or one of {tuple(INTERPOLATIONS)}, got {interpolation!r}"
        )
    for key in ("mean", "std"):
        values = spec[key]
        if not isinstance(values, list) or len(values) != 3 or not all(isinstance(v, int | float) for v in values):
            raise ValueError(f"{source}: input.{key} must be 3 numbers, got {values!r}")
    if any(v == 0 for v in spec["std"]):
        raise ValueError(f"{source}: input.std must not contain 0")
    outputs = need(manifest, "outputs")
    _output_name(need(outputs, "logits", "outputs."), "logits", source)
    if "embedding" in outputs:
        _output_name(outputs["embedding"], "embedding", source)
    labels = need(manifest, "labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(v, str) for v in labels):
        raise ValueError(f"{source}: labels must be a non-empty list of strings")
    return manifest


@dataclass(frozen=True, eq=False)
class Classification:
    top: list[tuple[str, int, float]]  # (label, class_id, probability), best first
    embedding: np.ndarray | None  # float32 [D] (1280 for EfficientNet-Lite0); None if the model has no embedding


class ImageNetClassifier(OnnxModel):
    """Softmax top-k classification plus an embedding per image, pre/post-processing driven by the manifest.

    A :class:`models.protocol.Model` (see :class:`models.base.OnnxModel` for what it shares with the other
    families); :meth:`infer` gives {"logits": [N,C], "embedding": [N,D]}."""

    task = "classification"

    def __init__(
        self,
        path: str | Path = DEFAULT_PATH,
        *,
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
        lanes: int = 1,
        gpu: GpuOptions | None = None,
        top_k: int = 5,
    ) -> None:
        manifest = load_manifest(path)
        source = str(Path(path).with_name("manifest.json"))
        spec = manifest["input"]
        self.colour: str = spec["colour"]
        self.resize_mode: str = spec["resize"]
        self.crop_fraction = float(spec.get("crop_fraction", 0.875))
        self.interpolation: str = spec.get("interpolation", "auto")
        self.output_names: dict[str, str] = {
            role: _output_name(manifest["outputs"][role], role, source)
            for role in ("logits", "embedding")
            if role in manifest["outputs"]
        }
        super().__init__(
            path,
            manifest,
            run_outputs=list(self.output_names.values()),
            providers=providers,
            intra_op_threads=intra_op_threads,
            lanes=lanes,
            gpu=gpu,
        )
        self.top_k = max(1, min(int(top_k), len(self.labels)))
        self._check_session(source)

    def _check_session(self, source: str) -> None:
        """The manifest must describe the model it sits next to."""
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        if self.input_name not in inputs:
            raise ValueError(f"{source}: input.name {self.input_name!r} is not a model input {sorted(inputs)}")
        model_shape = inputs[self.input_name]
        w, h = self.size
        for axis, want in ((1, 3), (2, h), (3, w)):
            got = model_shape[axis] if len(model_shape) == 4 else None
            if isinstance(got, int) and got != want:
                raise ValueError(
                    f"{source}: input.shape {self.manifest['input']['shape']} does not match the model's {model_shape}"
                )
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        for role, name in self.output_names.items():
            if name not in outputs:
                raise ValueError(f"{source}: outputs.{role} {name!r} is not a model output {sorted(outputs)}")
        classes = outputs[self.output_names["logits"]][-1]
        if isinstance(classes, int) and classes != len(self.labels):
            raise ValueError(f"{source}: {len(self.labels)} labels but the model has {classes} classes")

    def _resize(self, image: np.ndarray) -> np.ndarray:
        w, h = self.size
        if self.resize_mode == "centre_crop":
            # Largest centred window with the input's aspect ratio, scaled by crop_fraction (upstream
            # EfficientNet eval: 224/256 of the shorter side for a square input).
            ih, iw = image.shape[:2]
            if iw * h > ih * w:  # wider than the input: the height limits
                ch = max(1, round(ih * self.crop_fraction))
                cw = max(1, round(ch * w / h))
            else:
                cw = max(1, round(iw * self.crop_fraction))
                ch = max(1, round(cw * h / w))
            y, x = (ih - ch) // 2, (iw - cw) // 2
            image = image[y : y + ch, x : x + cw]
        ih, iw = image.shape[:2]
        if self.interpolation == "auto":
            flag = cv2.INTER_AREA if iw >= w and ih >= h else cv2.INTER_CUBIC
        else:
            flag = INTERPOLATIONS[self.interpolation]
        return cv2.resize(image, (w, h), interpolation=flag)

    def preprocess_into(self, image: np.ndarray, out: np.ndarray) -> None:
        """One BGR uint8 HxWx3 image into ``out``, a [3,H,W] slot of :meth:`new_batch`: resize per manifest,
        colour order per manifest, (x - mean) / std."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected HxWx3 BGR, got shape {image.shape}")
        planes = cv2.split(self._resize(image))
        self._normalise_into(planes[::-1] if self.colour == "RGB" else planes, out)

    def outputs(self, raw: list[np.ndarray]) -> dict[str, np.ndarray]:
        """The session's outputs by role: {"logits": [N,C], "embedding": [N,D]} (embedding only if the
        manifest names one)."""
        return dict(zip(self.output_names, raw, strict=True))

    def postprocess(
        self, outputs: dict[str, np.ndarray], sizes: Sequence[tuple[int, int]] | None = None
    ) -> list[Classification]:
        """Softmax over the logits, top-k per image, and each image's embedding (float32 copy). ``sizes``,
        the images' (height, width) that every model's post-processing takes, change nothing here."""
        logits = np.asarray(outputs["logits"], np.float32)
        logits = logits.reshape(len(logits), -1)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        k = self.top_k
        top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
        embeddings = outputs.get("embedding")
        if embeddings is not None:
            embeddings = np.asarray(embeddings, np.float32).reshape(len(logits), -1)
        results = []
        for n in range(len(logits)):
            ids = top[n][np.argsort(-probs[n, top[n]], kind="stable")]
            results.append(
                Classification(
                    top=[(self.labels[int(c)], int(c), float(probs[n, c])) for c in ids],
                    embedding=None if embeddings is None else embeddings[n].copy(),
                )
            )
        return results

    def classify(self, images: Sequence[np.ndarray]) -> list[Classification]:
        """Top-k classes and the embedding of each image (BGR uint8 HxWx3): :meth:`predict`."""
        return self.predict(images)
