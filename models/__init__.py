"""Models the worker can run: see :mod:`models.registry`."""

from __future__ import annotations

from models.registry import ModelError, ModelSpec, discover, load, resolve

__all__ = ["ModelError", "ModelSpec", "discover", "load", "load_detector", "resolve"]


def load_detector(ref: str, **options):
    """The detection model ``ref`` (``name`` or ``name@version``), ready to run."""
    spec = resolve(ref, options.get("extra_dirs"))
    if spec.task != "detection":
        raise ModelError(f"model {ref!r} is a {spec.task} model, not a detector")
    return load(ref, **options)
