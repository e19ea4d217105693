"""Models the worker can run: see :mod:`models.registry` for how they are found and loaded, and
:mod:`models.protocol` for what every one of them offers."""

from __future__ import annotations

from models.protocol import Model
from models.registry import ModelError, ModelSpec, discover, load, resolve

__all__ = ["Model", "ModelError", "ModelSpec", "discover", "load", "load_detector", "resolve"]


def load_detector(ref: str, **options) -> Model:
    """The detection model ``ref`` (``name`` or ``name@version``), ready to run."""
    spec = resolve(ref, options.get("extra_dirs"))
    if spec.task != "detection":
        raise ModelError(f"model {ref!r} is a {spec.task} model, not a detector")
    return load(ref, **options)
