"""Models the worker can run. Each lives in ``models/zoo/NAME/`` with its ONNX file and a manifest."""

from __future__ import annotations


def load_detector(name: str, **options):
    """The detector called ``name`` (``name`` or ``name@version``), ready to run."""
    base, _, version = name.partition("@")
    if base == "nanodet-m":
        from models.nanodet import NanoDet

        detector = NanoDet(**options)
        if version and version != detector.version:
            raise ValueError(f"model {name!r}: only version {detector.version} of {base} is installed")
        return detector
    raise ValueError(f"unknown model {name!r}; installed: nanodet-m")
