"""Where a frame's pixels are decoded, measured, shrunk to a thumbnail and turned into the model's input: the
frame backend, the seam between the worker's prepare stage and the device that does that work.

:class:`streams.process.FrameProcessor` does the contract checks (key, capture time) and the batching; a
backend does the pixel work, one frame at a time, in the decode threads:

- :class:`CpuFrames`, the default and the only one claimed working: OpenCV, a JPEG decoded at a reduced scale
  when every use needs fewer pixels (:func:`streams.decode.jpeg_scale`);
- ``gpu`` (:class:`streams.gpu_frames.GpuFrames`): nvImageCodec decodes on the device, CuPy measures and
  resizes there, and only the model's input, the small grey copy and the thumbnail come back to the host. It is
  chosen only when ``CVOPS_FRAME_BACKEND=gpu`` is set **and** its libraries import **and** a CUDA device is
  there (:func:`choose`); otherwise the worker says why and runs on the CPU. It has not been run on a GPU yet:
  ``load-tests/gpu_check.sh`` is the check to run where there is one (docs/scaling.md).

Whatever the backend, a frame that cannot be decoded is a dead letter with the reason the CPU path gives
(``corrupt_image``, ``too_many_pixels``, ``size_mismatch``...): the header checks run on the CPU first, from the
image's own header, for every backend.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import cv2
import numpy as np

from core.settings import Settings
from streams.decode import DecodedFrame, decode_frame
from streams.monitor import image as image_signals

log = logging.getLogger("cvops.worker")


class FrameBackend(Protocol):
    """The pixel work on one frame. ``name`` is what the worker reports (``decoder`` in /api/v1/workers)."""

    name: str

    def decode(self, value: bytes | None) -> DecodedFrame:
        """Unpack and decode a frames-topic value; :class:`core.contracts.ContractError` says what is wrong."""
        ...

    def measure(self, decoded: DecodedFrame) -> image_signals.ImageSignals:
        """The image signals, the frame's own width and height among them, whatever the scale it was decoded at."""
        ...

    def thumbnail(self, decoded: DecodedFrame, width: int) -> tuple[bytes, tuple[int, int]]:
        """A JPEG ``width`` px wide at most, and its size."""
        ...

    def preprocess_into(self, decoded: DecodedFrame, slot: np.ndarray) -> None:
        """The model's input for this frame into ``slot``, one slot of the detector's batch."""
        ...

    def host_image(self, decoded: DecodedFrame) -> np.ndarray:
        """The decoded pixels as a BGR numpy array (for the embedder)."""
        ...


class CpuFrames:
    """OpenCV on the CPU: what the worker has always done, with the reduced JPEG decode when ``need`` allows."""

    def __init__(self, settings: Settings, detector, need: tuple[int, int]):
        self.max_pixels = settings.max_pixels
        self.detector = detector
        self.need = need
        reduced = f"JPEG reduced while >= {need[0]}x{need[1]} px" if need != (0, 0) else "full size"
        self.name = f"cpu: OpenCV (libjpeg-turbo), {reduced}"

    def decode(self, value: bytes | None) -> DecodedFrame:
        return decode_frame(value, self.max_pixels, self.need)

    def measure(self, decoded: DecodedFrame) -> image_signals.ImageSignals:
        return full_size(image_signals.measure(decoded.image), decoded)

    def thumbnail(self, decoded: DecodedFrame, width: int) -> tuple[bytes, tuple[int, int]]:
        return thumbnail(decoded.image, width)

    def preprocess_into(self, decoded: DecodedFrame, slot: np.ndarray) -> None:
        self.detector.preprocess_into(decoded.image, slot)

    def host_image(self, decoded: DecodedFrame) -> np.ndarray:
        return decoded.image


def thumbnail(image: np.ndarray, width: int, quality: int = 70) -> tuple[bytes, tuple[int, int]]:
    """A JPEG of ``image`` ``width`` px wide (never wider than the image) and its size: about 0.4 ms and 4 KB
    for a 1280x720 frame at 320 px."""
    h, w = image.shape[:2]
    if w > width:
        image = cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_LINEAR)
    ok, jpg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("could not encode a thumbnail")
    return jpg.tobytes(), (image.shape[1], image.shape[0])


def full_size(signals: image_signals.ImageSignals, decoded: DecodedFrame) -> image_signals.ImageSignals:
    """``signals`` with the frame's own width, height and aspect ratio, whatever the scale it was decoded at
    (the rest is measured on the analysis copy, of one size either way)."""
    import dataclasses

    height, width = decoded.size
    if (signals.width, signals.height) == (width, height):
        return signals
    return dataclasses.replace(signals, width=width, height=height, aspect_ratio=width / height)


def choose(requested: str, gpu_missing: Callable[[], str | None]) -> tuple[str, str]:
    """The backend to run (``cpu`` or ``gpu``) and why. ``gpu_missing()`` says what the GPU backend lacks
    (its libraries, a device), or None when it has all it needs; it is asked only when ``gpu`` is requested.

    >>> choose("cpu", lambda: None)
    ('cpu', 'CVOPS_FRAME_BACKEND=cpu')
    >>> choose("gpu", lambda: "nvidia.nvimgcodec does not import")
    ('cpu', 'gpu asked for, but nvidia.nvimgcodec does not import')
    >>> choose("gpu", lambda: None)
    ('gpu', 'CVOPS_FRAME_BACKEND=gpu, libraries and a CUDA device present')
    """
    if requested != "gpu":
        return "cpu", f"CVOPS_FRAME_BACKEND={requested}"
    missing = gpu_missing()
    if missing:
        return "cpu", f"gpu asked for, but {missing}"
    return "gpu", "CVOPS_FRAME_BACKEND=gpu, libraries and a CUDA device present"


def frame_backend(settings: Settings, detector, need: tuple[int, int]) -> FrameBackend:
    """The backend the settings ask for, where it can run; the CPU's otherwise (logged)."""
    from streams import gpu_frames

    kind, why = choose(settings.frame_backend, gpu_frames.missing)
    if kind == "gpu":
        log.warning("frame backend: gpu (%s); not verified on a GPU yet (docs/scaling.md)", why)
        return gpu_frames.GpuFrames(settings, detector, need)
    if settings.frame_backend != "cpu":
        log.warning("frame backend: cpu (%s)", why)
    return CpuFrames(settings, detector, need)
