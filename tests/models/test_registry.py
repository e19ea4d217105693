"""The registry: manifests, versions, checks, a user's own model with no code, provider fallback."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import onnxruntime as ort
import pytest

from models import ModelError, discover, load, load_detector, resolve
from models.registry import ZOO, read_manifest, resolve_providers

NANODET = ZOO / "nanodet-m"


def user_model(tmp_path: Path, name: str = "my-detector", version: str = "2.0.0", **changes) -> Path:
    """A user's own folder: the NanoDet file (linked) and a manifest of their own."""
    folder = tmp_path / "models" / f"{name}-{version}"
    folder.mkdir(parents=True)
    manifest = json.loads((NANODET / "manifest.json").read_text())
    manifest.update({"name": name, "version": version, "file": "model.onnx", **changes})
    for key in [k for k, v in changes.items() if v is None]:
        del manifest[key]
    os.symlink(NANODET / "nanodet-m.onnx", folder / "model.onnx")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_the_bundled_detector_is_listed_and_loads_by_name_or_version():
    assert "nanodet-m@1.0.0" in [s.ref for s in discover("")]
    assert resolve("nanodet-m", "").ref == resolve("nanodet-m@1.0.0", "").ref
    det = load_detector("nanodet-m", extra_dirs="", intra_op_threads=1)
    assert (det.name, det.version) == ("nanodet-m", "1.0.0")


def test_unknown_names_and_versions_are_clear_errors():
    with pytest.raises(ModelError, match=r"no model called 'yolo'.*nanodet-m"):
        resolve("yolo", "")
    with pytest.raises(ModelError, match="has no version '9'"):
        resolve("nanodet-m@9", "")


def test_a_users_own_detector_needs_only_a_manifest(tmp_path):
    user_model(tmp_path, version="2.0.0")
    user_model(tmp_path, version="10.1.0")
    extra = str(tmp_path / "models")
    assert resolve("my-detector", extra).version == "10.1.0"  # versions compare as numbers
    det = load_detector("my-detector@2.0.0", extra_dirs=extra, intra_op_threads=1)
    assert (det.name, det.version) == ("my-detector", "2.0.0")


def test_a_changed_file_fails_its_sha256_check(tmp_path):
    user_model(tmp_path, sha256="0" * 64)
    with pytest.raises(ModelError, match="sha256"):
        load("my-detector", extra_dirs=str(tmp_path / "models"))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"labels": None, "licence": None}, "missing field.*labels, licence"),
        ({"family": "yolo-v99"}, "unknown family 'yolo-v99'"),
        ({"task": "segmentation"}, "unknown task"),
        ({"input": {"name": "x", "shape": ["N", 416, 416, 3], "layout": "NHWC", "colour": "BGR",
                    "resize": "stretch", "mean": [0, 0, 0], "std": [1, 1, 1]}}, r"not \[N, 3, H, W\] NCHW"),
        ({"input": {"name": "x", "shape": ["N", 3, 416, 416]}}, "input is missing layout"),
        ({"file": "elsewhere.onnx"}, "elsewhere.onnx not found"),
    ],
)  # fmt: skip
def test_broken_manifests_say_what_is_wrong(tmp_path, changes, message):
    folder = user_model(tmp_path, **changes)
    with pytest.raises(ModelError, match=message):
        read_manifest(folder)


def test_a_missing_model_folder_is_reported(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        discover(str(tmp_path / "nowhere"))


def test_providers_fall_back_to_cpu_where_no_gpu_is_offered():
    available = set(ort.get_available_providers())
    chosen = resolve_providers("TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider")
    assert chosen[-1] == "CPUExecutionProvider"
    assert all(p in available for p in chosen)
    det = load_detector("nanodet-m", extra_dirs="", providers="CUDAExecutionProvider", intra_op_threads=1)
    if "CUDAExecutionProvider" not in available:
        assert det.providers == ["CPUExecutionProvider"]  # what the session really uses
    with pytest.raises(ModelError, match="unknown execution provider"):
        resolve_providers("QuantumExecutionProvider")


def test_the_registry_copy_of_a_model_is_not_needed_in_place(tmp_path):
    # A model folder can live anywhere (CVOPS_MODEL_DIRS); the bundled zoo is untouched.
    copy = tmp_path / "models" / "nanodet-copy"
    shutil.copytree(NANODET, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["name"] = "nanodet-copy"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert resolve("nanodet-copy", str(tmp_path / "models")).path == copy / "nanodet-m.onnx"
