"""The model registry: every model is a folder with its ONNX file and a ``manifest.json`` describing it.

Models are found in ``models/zoo/`` and in the folders listed in ``CVOPS_MODEL_DIRS`` (``os.pathsep``
separated); each subfolder with a manifest is one model. Load one by ``name`` (its highest version) or
``name@version``: what :func:`load` gives is a :class:`models.protocol.Model`. A manifest names its
pre/post-processing ``family``; adding a model of a known family (a NanoDet detector, a YOLO whose graph
decodes its heads into boxes and scores, an ImageNet-style classifier) needs only its ONNX file and a manifest,
no code.

Required manifest fields: name, version, task, family, file, sha256, input (name, shape [N,3,H,W],
layout NCHW, colour, resize, mean, std), labels, licence, source. Families add their own (NanoDet:
strides, reg_max, outputs; YOLO: outputs). The file's sha256 is checked at load: a model is what its manifest says.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort

from models.protocol import Model

ZOO = Path(__file__).resolve().parent / "zoo"
FAMILIES = {
    "nanodet": "models.nanodet:NanoDet",
    "yolo": "models.yolo:Yolo",
    "imagenet-classifier": "models.classifier:ImageNetClassifier",
}
TASKS = {"detection", "classification", "embedding"}
REQUIRED = ("name", "version", "task", "family", "file", "sha256", "input", "labels", "licence", "source")
INPUT_REQUIRED = ("name", "shape", "layout", "colour", "resize", "mean", "std")
KNOWN_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class ModelError(ValueError):
    """A model that cannot be found, or whose manifest or file is not right. The message says which."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    version: str
    task: str
    family: str
    path: Path  # the ONNX file
    manifest: dict = field(repr=False, compare=False)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def summary(self) -> dict:
        m = self.manifest
        return {
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "family": self.family,
            "input": m["input"],
            "labels": len(m["labels"]),
            "licence": m["licence"],
            "source": m["source"],
            "sha256": m["sha256"],
            "file": str(self.path),
        }


def read_manifest(folder: str | Path) -> ModelSpec:
    """Read and validate ``folder/manifest.json``; :class:`ModelError` names the first problem."""
    folder = Path(folder)
    where = folder / "manifest.json"
    try:
        m = json.loads(where.read_text())
    except FileNotFoundError:
        raise ModelError(f"{where}: no manifest") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{where}: not valid JSON ({exc})") from None
    missing = [k for k in REQUIRED if k not in m]
    if missing:
        raise ModelError(f"{where}: missing field(s) {', '.join(missing)}")
    if m["family"] not in FAMILIES:
        raise ModelError(f"{where}: unknown family {m['family']!r}; known: {', '.join(sorted(FAMILIES))}")
    if m["task"] not in TASKS:
        raise ModelError(f"{where}: unknown task {m['task']!r}; known: {', '.join(sorted(TASKS))}")
    inp = m["input"]
    missing = [k for k in INPUT_REQUIRED if k not in inp]
    if missing:
        raise ModelError(f"{where}: input is missing {', '.join(missing)}")
    shape = inp["shape"]
    if (
        len(shape) != 4
        or inp["layout"] != "NCHW"
        or shape[1] != 3
        or not all(isinstance(d, int) and d > 0 for d in shape[2:])
    ):
        raise ModelError(f"{where}: input shape {shape} ({inp['layout']}) is not [N, 3, H, W] NCHW")
    if inp["colour"] not in ("RGB", "BGR"):
        raise ModelError(f"{where}: input colour must be RGB or BGR, not {inp['colour']!r}")
    if len(inp["mean"]) != 3 or len(inp["std"]) != 3 or not all(s > 0 for s in inp["std"]):
        raise ModelError(f"{where}: input mean and std need 3 values each, std > 0")
    path = folder / m["file"]
    if not path.is_file():
        raise ModelError(f"{where}: model file {m['file']} not found beside the manifest")
    return ModelSpec(str(m["name"]), str(m["version"]), m["task"], m["family"], path, m)


def verify_file(spec: ModelSpec) -> None:
    digest = hashlib.sha256(spec.path.read_bytes()).hexdigest()
    if digest != spec.manifest["sha256"]:
        raise ModelError(
            f"{spec.path}: sha256 is {digest}, the manifest says {spec.manifest['sha256']}: "
            "the file was changed or the manifest is stale"
        )


def model_dirs(extra: str | None = None) -> list[Path]:
    extra = os.environ.get("CVOPS_MODEL_DIRS", "") if extra is None else extra
    return [ZOO, *(Path(p) for p in extra.split(os.pathsep) if p)]


def discover(extra: str | None = None) -> list[ModelSpec]:
    """Every valid model in the registry folders, by name then version. Broken ones raise ModelError."""
    specs = []
    for root in model_dirs(extra):
        if not root.is_dir():
            raise ModelError(f"model folder {root} does not exist (CVOPS_MODEL_DIRS)")
        specs += [read_manifest(d) for d in sorted(root.iterdir()) if (d / "manifest.json").is_file()]
    return sorted(specs, key=lambda s: (s.name, _version_key(s.version)))


def _version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in version.replace("-", ".").split("."))


def resolve(ref: str, extra: str | None = None) -> ModelSpec:
    """The model ``name`` (highest version) or ``name@version``."""
    name, _, version = ref.partition("@")
    found = [s for s in discover(extra) if s.name == name]
    if not found:
        names = sorted({s.name for s in discover(extra)})
        raise ModelError(f"no model called {name!r}; installed: {', '.join(names) or 'none'}")
    if version:
        exact = [s for s in found if s.version == version]
        if not exact:
            raise ModelError(f"model {name!r} has no version {version!r}; installed: {[s.version for s in found]}")
        return exact[0]
    return found[-1]


def resolve_providers(requested: str | list[str] = "auto") -> list[str]:
    """Execution providers to ask for, in order: those requested (or TensorRT, CUDA, CPU for ``auto``)
    that this onnxruntime build offers, always ending with CPU.

    onnxruntime-gpu offers CUDA even where there is no GPU; the session then falls back to CPU, so the
    providers really in use are read from the session (``session.get_providers()``), not from this list.
    """
    wanted = list(KNOWN_PROVIDERS) if requested in ("auto", ["auto"]) else requested
    if isinstance(wanted, str):
        wanted = [p.strip() for p in wanted.split(",") if p.strip()]
    unknown = [p for p in wanted if p not in ort.get_all_providers()]
    if unknown:
        raise ModelError(f"unknown execution provider(s) {unknown}; onnxruntime knows {ort.get_all_providers()}")
    available = set(ort.get_available_providers())
    chosen = [p for p in wanted if p in available and p != "CPUExecutionProvider"]
    return [*chosen, "CPUExecutionProvider"]


def load(ref: str, *, extra_dirs: str | None = None, providers: str | list[str] = "auto", **options) -> Model:
    """Load model ``ref`` (``name`` or ``name@version``) with its family's class, file checked: the setup
    step of a model's life (:mod:`models.protocol`). ``options`` go to the family (threads, lanes, thresholds)."""
    spec = resolve(ref, extra_dirs)
    verify_file(spec)
    module, _, cls = FAMILIES[spec.family].partition(":")
    family = getattr(importlib.import_module(module), cls)
    return family(spec.path, providers=resolve_providers(providers), **options)
