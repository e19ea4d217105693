"""Per-frame image signals, the set of :mod:`streams.monitor.signals` and more, measured on one small grey copy.

Everything but width and height is measured on the analysis copy (grey, at most
:data:`streams.monitor.signals.ANALYSIS_WIDTH` px wide), so a camera's figures are comparable over time and the cost
barely grows with resolution. Saturation needs colour: it is taken from a colour copy of the same small size.
The small grey copy is returned, so that the next frame of the same camera can be compared with it
(``frame_diff``) without keeping the full frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from streams.monitor import signals

UNDER_EXPOSED_LUMA = 16  # a pixel at or below this is crushed black
OVER_EXPOSED_LUMA = 239  # a pixel at or above this is clipped white
BLACK_BRIGHTNESS = 10.0
BLACK_CONTRAST = 5.0


@dataclass(frozen=True)
class ImageSignals(signals.ImageSignals):
    """:class:`streams.monitor.signals.ImageSignals` plus exposure, colour and change signals."""

    contrast: float  # std of luma, 0-255
    saturation: float  # mean S of HSV, 0-255
    under_exposed: float  # share of pixels with luma <= 16, 0-1
    over_exposed: float  # share of pixels with luma >= 239, 0-1
    frame_diff: float | None  # mean |luma - previous luma|, 0-255; None for a camera's first frame or a new size
    black: bool  # brightness < 10 and contrast < 5
    small: np.ndarray = field(repr=False, compare=False)  # the grey analysis copy, for the next call


SATURATION_WIDTH = 160  # px; a mean over a sample of about 10k pixels is as good as over all of them


def _colour_sample(image: np.ndarray) -> np.ndarray:
    w = image.shape[1]
    if w <= SATURATION_WIDTH:
        return image
    h = max(1, round(image.shape[0] * SATURATION_WIDTH / w))
    # Nearest, not area: a regular sample of pixels costs microseconds at any size, and a mean needs no more.
    return cv2.resize(image, (SATURATION_WIDTH, h), interpolation=cv2.INTER_NEAREST)


def measure(image_bgr: np.ndarray, previous_small: np.ndarray | None = None) -> ImageSignals:
    """Signals of one BGR (or grey) uint8 image; ``previous_small`` is the last frame's ``small`` copy.

    Brightness and blur match :func:`streams.monitor.signals.measure`'s (to float rounding). Saturation is the mean
    over a regular sample of the image, :data:`SATURATION_WIDTH` px wide. The exposure shares are taken on the
    area-averaged small copy, so isolated clipped pixels count less than in the full frame.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> first = measure(np.full((90, 160, 3), (255, 0, 0), np.uint8))  # pure blue
    >>> (round(first.brightness, 1), round(first.saturation), first.frame_diff, first.black)
    (29.0, 255, None, False)
    >>> dark = measure(np.zeros((90, 160, 3), np.uint8), previous_small=first.small)
    >>> (round(dark.frame_diff, 1), dark.black, dark.under_exposed)
    (29.0, True, 1.0)
    """
    h, w = image_bgr.shape[:2]
    grey = signals.analysis_copy(image_bgr)
    mean, std = cv2.meanStdDev(grey)
    brightness, contrast = float(mean[0, 0]), float(std[0, 0])
    _, lap_std = cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_32F))  # numpy's var() is 3x slower
    blur = signals.sharpness(float(lap_std[0, 0]) ** 2, contrast)
    n = grey.size
    under = int(np.count_nonzero(grey <= UNDER_EXPOSED_LUMA)) / n
    over = int(np.count_nonzero(grey >= OVER_EXPOSED_LUMA)) / n
    if image_bgr.ndim == 3:
        hsv = cv2.cvtColor(_colour_sample(image_bgr), cv2.COLOR_BGR2HSV)
        saturation = float(cv2.mean(hsv)[1])
    else:
        saturation = 0.0
    measured = ImageSignals(
        width=w,
        height=h,
        aspect_ratio=w / h,
        brightness=brightness,
        blur=blur,
        contrast=contrast,
        saturation=saturation,
        under_exposed=under,
        over_exposed=over,
        frame_diff=None,
        black=brightness < BLACK_BRIGHTNESS and contrast < BLACK_CONTRAST,
        small=grey if grey is not image_bgr else grey.copy(),
    )
    return with_previous(measured, previous_small)


def with_previous(measured: ImageSignals, previous_small: np.ndarray | None) -> ImageSignals:
    """``measured`` with its ``frame_diff`` against the camera's previous ``small`` copy.

    The worker measures frames in parallel, before it knows their order within a camera, and takes the
    difference (microseconds on the small copy) afterwards, in camera order.
    """
    if previous_small is None or previous_small.shape != measured.small.shape:
        return measured
    return replace(measured, frame_diff=float(cv2.mean(cv2.absdiff(measured.small, previous_small))[0]))
