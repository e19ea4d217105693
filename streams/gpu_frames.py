"""The GPU frame backend (:mod:`streams.frames`): frames decoded by nvImageCodec on the device (the hardware JPEG
decoder where the GPU has one, else CUDA), measured, resized and normalised there with CuPy, so that only the
model's input, the small grey copy the moved-camera check keeps and the thumbnails come back to the host.

NOT VERIFIED ON A GPU. The array code is written once against an array namespace ``xp`` (numpy or CuPy, which
share these functions), and the tests run it with numpy on the CPU against the CPU path (OpenCV and
:func:`streams.monitor.image.measure`): the same signals within stated tolerances, the same detections. What
only a GPU can check (nvImageCodec's decode, CuPy's kernels, the speed) is ``load-tests/gpu_check.sh``.

Each OpenCV step is reproduced, not approximated, where OpenCV's own arithmetic is simple:

- grey: OpenCV's fixed-point BT.601 weights (``(9798 R + 19235 G + 3735 B + 2**14) >> 15``), exact;
- the analysis copy (``INTER_AREA``, shrinking): each output pixel the mean of the input area it covers, as two
  matrix products (rows, then columns), in float32: within 1 grey level of OpenCV's;
- the model's input and thumbnails (``INTER_LINEAR``): two-tap weights at half-pixel centres as two matrix
  products: within 1 level of OpenCV's fixed-point ones;
- the saturation sample (``INTER_NEAREST``) and HSV's S (OpenCV's 12-bit fixed-point division), exact;
- the variance of the Laplacian (3x3, the border reflected as OpenCV's default), exact up to float rounding.

Frames are decoded one by one in the worker's decode threads (each with its own nvImageCodec decoder); decoding
each batch in one call, and handing the model's input to ONNX Runtime on the device (IO binding) rather than
through the host, are the next steps (docs/scaling.md).
"""

from __future__ import annotations

import threading
from typing import Any

import cv2
import numpy as np

from core.contracts import ContractError, unpack_frame
from core.settings import Settings
from streams.decode import DecodedFrame, image_info
from streams.monitor import image as image_signals
from streams.monitor import signals

# EXIF orientation -> the steps that turn stored pixels upright (streams.decode._UPRIGHT, in array terms).
_UPRIGHT = {
    2: lambda xp, a: a[:, ::-1],
    3: lambda xp, a: a[::-1, ::-1],
    4: lambda xp, a: a[::-1],
    5: lambda xp, a: xp.swapaxes(a, 0, 1),
    6: lambda xp, a: xp.swapaxes(a, 0, 1)[:, ::-1],
    7: lambda xp, a: xp.swapaxes(a, 0, 1)[::-1, ::-1],
    8: lambda xp, a: xp.swapaxes(a, 0, 1)[::-1],
}


def missing() -> str | None:
    """What the GPU backend lacks here (its libraries, a CUDA device), or None when it has all it needs."""
    try:
        import cupy
        from nvidia import nvimgcodec  # noqa: F401
    except Exception as exc:  # ImportError, or a library that imports and then finds no driver
        return f"its libraries do not import ({type(exc).__name__}: {exc}); install cvops[gpu-frames]"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no CUDA device is present"
    except Exception as exc:
        return f"no CUDA device is usable ({type(exc).__name__}: {exc})"
    return None


# Resampling as matrices: out = R_rows @ image @ R_cols.T, for one channel.


def area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of OpenCV's ``INTER_AREA`` when shrinking: output pixel i is the mean of input
    interval [i s, (i + 1) s), s = n_in / n_out, partial pixels weighted by their overlap.

    >>> area_weights(4, 2).tolist()
    [[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]]
    """
    if n_out >= n_in:
        return np.eye(n_out, n_in, dtype=np.float32)
    scale = n_in / n_out
    starts = np.arange(n_out)[:, None] * scale
    left = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(left + 1, starts + scale) - np.maximum(left, starts), 0, None)
    return (overlap / scale).astype(np.float32)


def linear_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of OpenCV's ``INTER_LINEAR``: two taps at half-pixel centres, clamped at the edges.

    >>> linear_weights(2, 4).tolist()
    [[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]]
    """
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    x0 = np.floor(src).astype(np.int64)
    frac = (src - x0).astype(np.float32)
    frac[x0 < 0], x0[x0 < 0] = 0.0, 0
    frac[x0 >= n_in - 1], x0[x0 >= n_in - 1] = 0.0, n_in - 1
    w = np.zeros((n_out, n_in), np.float32)
    rows = np.arange(n_out)
    w[rows, x0] += 1.0 - frac
    w[rows, np.minimum(x0 + 1, n_in - 1)] += frac
    return w


def nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Input index of each output pixel under OpenCV's ``INTER_NEAREST``: ``floor(i * n_in / n_out)``."""
    return np.minimum(np.floor(np.arange(n_out) * (n_in / n_out)).astype(np.int64), n_in - 1)


def resample(xp, image, size: tuple[int, int], weights) -> Any:
    """``image`` (H x W or H x W x C) resampled to ``size`` (width, height) with ``weights(n_in, n_out)``, as
    float32."""
    h, w = image.shape[:2]
    rows = xp.asarray(weights(h, size[1]))
    cols = xp.asarray(weights(w, size[0]))
    x = image.astype(xp.float32)
    if x.ndim == 2:
        return rows @ x @ cols.T
    return xp.stack([rows @ x[..., c] @ cols.T for c in range(x.shape[2])], axis=-1)


def grey(xp, bgr) -> Any:
    """OpenCV's ``COLOR_BGR2GRAY`` on uint8, exactly."""
    b, g, r = (bgr[..., k].astype(xp.int32) for k in range(3))
    return ((r * 9798 + g * 19235 + b * 3735 + (1 << 14)) >> 15).astype(xp.uint8)


def analysis_copy(xp, bgr) -> Any:
    """:func:`streams.monitor.signals.analysis_copy` on ``xp``: grey, at most ``ANALYSIS_WIDTH`` px wide."""
    g = grey(xp, bgr)
    h, w = g.shape
    if w <= signals.ANALYSIS_WIDTH:
        return g
    size = (signals.ANALYSIS_WIDTH, max(1, round(h * signals.ANALYSIS_WIDTH / w)))
    # Halves rounded up, as OpenCV's integer path for whole factors does (a bias of 0.1 level otherwise).
    return xp.clip(xp.floor(resample(xp, g, size, area_weights) + 0.5), 0, 255).astype(xp.uint8)


def saturation(xp, bgr) -> float:
    """Mean S of HSV (OpenCV's uint8 arithmetic) over the regular nearest-pixel sample of
    :func:`streams.monitor.image._colour_sample`."""
    h, w = bgr.shape[:2]
    if w > image_signals.SATURATION_WIDTH:
        sh = max(1, round(h * image_signals.SATURATION_WIDTH / w))
        rows = xp.asarray(nearest_index(h, sh))
        cols = xp.asarray(nearest_index(w, image_signals.SATURATION_WIDTH))
        bgr = bgr[rows][:, cols]
    x = bgr.astype(xp.int32)
    v, low = x.max(axis=2), x.min(axis=2)
    table = xp.asarray(np.concatenate([[0], np.rint((255 << 12) / np.arange(1, 256))]).astype(np.int32))
    s = ((v - low) * table[v] + (1 << 11)) >> 12
    return float(s.mean())


def laplacian_variance(xp, g) -> float:
    """Variance of OpenCV's 3x3 Laplacian (``ksize=1``, border reflected without repeating the edge)."""
    p = xp.pad(g.astype(xp.float32), 1, mode="reflect")
    lap = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4 * p[1:-1, 1:-1]
    return float(lap.var())


def measure(xp, bgr, size: tuple[int, int]) -> image_signals.ImageSignals:
    """:func:`streams.monitor.image.measure` on ``xp``; ``size`` is the frame's own (width, height). The small
    grey copy comes back to the host, for the next frame's difference and the moved-camera check."""
    g = analysis_copy(xp, bgr)
    brightness, contrast = float(g.mean()), float(g.std())
    n = g.size
    small = g.get() if hasattr(g, "get") else np.asarray(g)
    return image_signals.ImageSignals(
        width=size[0],
        height=size[1],
        aspect_ratio=size[0] / size[1],
        brightness=brightness,
        blur=signals.sharpness(laplacian_variance(xp, g), contrast),
        contrast=contrast,
        saturation=saturation(xp, bgr),
        under_exposed=int((g <= image_signals.UNDER_EXPOSED_LUMA).sum()) / n,
        over_exposed=int((g >= image_signals.OVER_EXPOSED_LUMA).sum()) / n,
        frame_diff=None,
        black=brightness < image_signals.BLACK_BRIGHTNESS and contrast < image_signals.BLACK_CONTRAST,
        small=np.ascontiguousarray(small),
    )


def model_input(xp, bgr, size: tuple[int, int], colour: str, mean, std) -> Any:
    """A stretch-resized (``INTER_LINEAR``), normalised [3, H, W] float32 input, as NanoDet's family makes it."""
    x = resample(xp, bgr, size, linear_weights)
    if colour == "RGB":
        x = x[..., ::-1]
    x = (x - xp.asarray(mean, xp.float32)) / xp.asarray(std, xp.float32)
    return xp.ascontiguousarray(x.transpose(2, 0, 1))


def _nvimgcodec_decoder():
    from nvidia import nvimgcodec

    decoder = nvimgcodec.Decoder()
    # The turn is applied here from the orientation Pillow read, as on the CPU path, not by the decoder.
    params = nvimgcodec.DecodeParams(apply_exif_orientation=False, color_spec=nvimgcodec.ColorSpec.RGB)
    return lambda data: decoder.decode(data, params=params)


class GpuFrames:
    """The frame backend on a CUDA device (:mod:`streams.frames`). ``xp`` and ``decode_rgb`` (bytes -> an RGB
    H x W x 3 uint8 array of ``xp``, or None) default to CuPy and nvImageCodec; the tests pass numpy and
    OpenCV to run the same code on a CPU."""

    def __init__(self, settings: Settings, detector, need: tuple[int, int], xp=None, decode_rgb=None):
        if xp is None:
            import cupy as xp
        self.xp = xp
        self.max_pixels = settings.max_pixels
        self.detector = detector
        spec = detector.manifest["input"] if hasattr(detector, "manifest") else {}
        self.on_device = spec.get("resize") == "stretch"  # else the model's own pre-processing, on the host
        self._input = (spec.get("colour", "BGR"), spec.get("mean"), spec.get("std"))
        self._local = threading.local()
        self._decode_rgb = decode_rgb
        self.name = "gpu: nvImageCodec + CuPy (unverified)" if decode_rgb is None else "gpu code on the host (test)"

    def _decoder(self):
        if self._decode_rgb is not None:
            return self._decode_rgb
        if not hasattr(self._local, "decode"):
            self._local.decode = _nvimgcodec_decoder()  # one per decode thread
        return self._local.decode

    def decode(self, value: bytes | None) -> DecodedFrame:
        """The CPU path's checks, in its order and with its reasons, around the device's decode."""
        frame = unpack_frame(value)
        h = frame.header
        width, height, orientation = image_info(frame.image, h.encoding)
        if width * height > self.max_pixels:
            raise ContractError(
                "too_many_pixels", f"image is {width}x{height}, more than the {self.max_pixels} pixels allowed"
            )
        try:
            rgb = self._decoder()(frame.image)
        except Exception:
            rgb = None
        if rgb is None or tuple(self.xp.asarray(rgb).shape) != (height, width, 3):
            raise ContractError("corrupt_image", f"{h.encoding} data could not be decoded ({len(frame.image)} bytes)")
        image = self.xp.asarray(rgb)[..., ::-1]
        if orientation in _UPRIGHT:
            image = _UPRIGHT[orientation](self.xp, image)
        upright = (height, width) if orientation >= 5 else (width, height)
        if upright != (h.width, h.height):
            raise ContractError(
                "size_mismatch", f"header says {h.width}x{h.height}, image is {upright[0]}x{upright[1]}"
            )
        return DecodedFrame(frame, self.xp.ascontiguousarray(image), 1)

    def measure(self, decoded: DecodedFrame) -> image_signals.ImageSignals:
        height, width = decoded.size
        return measure(self.xp, decoded.image, (width, height))

    def thumbnail(self, decoded: DecodedFrame, width: int) -> tuple[bytes, tuple[int, int]]:
        h, w = decoded.image.shape[:2]
        image = decoded.image
        if w > width:
            size = (width, max(1, round(h * width / w)))
            image = self.xp.clip(self.xp.rint(resample(self.xp, image, size, linear_weights)), 0, 255)
        host = self._host(image.astype(self.xp.uint8))
        ok, jpg = cv2.imencode(".jpg", host, [cv2.IMWRITE_JPEG_QUALITY, 70])
        if not ok:
            raise ValueError("could not encode a thumbnail")
        return jpg.tobytes(), (host.shape[1], host.shape[0])

    def preprocess_into(self, decoded: DecodedFrame, slot: np.ndarray) -> None:
        if not self.on_device:
            self.detector.preprocess_into(self.host_image(decoded), slot)
            return
        colour, mean, std = self._input
        slot[...] = self._host(model_input(self.xp, decoded.image, self.detector.size, colour, mean, std))

    def host_image(self, decoded: DecodedFrame) -> np.ndarray:
        return self._host(decoded.image)

    def _host(self, array) -> np.ndarray:
        return np.ascontiguousarray(array.get() if hasattr(array, "get") else array)
