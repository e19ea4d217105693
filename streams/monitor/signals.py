"""Per-frame health signals, pure and cheap (well under 1 ms on a downscaled copy).

Blur and brightness are measured on a grey copy scaled to at most :data:`ANALYSIS_WIDTH` pixels wide,
so the figures of one camera are comparable over time and the cost does not grow with resolution.

Blur is sharpness at a standard contrast: the variance of the Laplacian, divided by the picture's own
contrast squared (the Laplacian is linear, so its variance grows with contrast squared) and multiplied by
:data:`REFERENCE_CONTRAST` squared. A picture made darker, brighter or flatter by the light, or by a lower
contrast, keeps its blur; only a softer picture (focus, a smeared or dirty lens) lowers it. Without the
division, light varying by a few percent made blur vary twice as much, and a lower contrast read as blur.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

ANALYSIS_WIDTH = 320
REFERENCE_CONTRAST = 50.0  # luma std at which blur is the plain variance of the Laplacian
CONTRAST_FLOOR = 10.0  # luma std below which a picture is too flat to judge its sharpness: no more rescaling


@dataclass(frozen=True)
class ImageSignals:
    width: int  # px
    height: int  # px
    aspect_ratio: float  # width / height
    brightness: float  # mean luma, 0-255
    blur: float  # variance of the Laplacian on the analysis copy at a standard contrast (sharpness); lower is blurrier


def analysis_copy(image: np.ndarray) -> np.ndarray:
    """Grey, at most ANALYSIS_WIDTH px wide (area interpolation keeps the mean exact enough)."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    w = grey.shape[1]
    if w > ANALYSIS_WIDTH:
        h = max(1, round(grey.shape[0] * ANALYSIS_WIDTH / w))
        grey = cv2.resize(grey, (ANALYSIS_WIDTH, h), interpolation=cv2.INTER_AREA)
    return grey


def sharpness(laplacian_var: float, contrast: float) -> float:
    """Blur at a standard contrast: ``laplacian_var`` (of the analysis copy) rescaled from the picture's
    ``contrast`` (luma std) to :data:`REFERENCE_CONTRAST`, a contrast under :data:`CONTRAST_FLOOR` counting
    as the floor (a near-flat picture's noise is not sharpness).

    >>> sharpness(400.0, 50.0), sharpness(64.0, 20.0)  # the same picture at 0.4 times the contrast
    (400.0, 400.0)
    >>> sharpness(3.0, 1.0)  # a black frame with a little noise
    75.0
    """
    return laplacian_var * (REFERENCE_CONTRAST / max(contrast, CONTRAST_FLOOR)) ** 2


def light_explains(contrast_ratio: float, brightness_ratio: float) -> bool:
    """Whether a change of contrast by ``contrast_ratio`` (new / reference) is the light's doing, the
    brightness having changed by ``brightness_ratio``: more or less light scales the mean and the spread
    of luma by the same factor (dusk: both x0.6), where a lower contrast moves the spread alone. Explained
    when both moved the same way and the brightness's factor accounts for at least half of the contrast's
    (in log terms); then the cause to name is brightness.

    >>> light_explains(0.6, 0.62), light_explains(0.4, 1.0), light_explains(1.0, 1.5)
    (True, False, False)
    """
    if contrast_ratio <= 0 or brightness_ratio <= 0:
        return False
    c, b = math.log(contrast_ratio), math.log(brightness_ratio)
    return c * b > 0 and abs(c - b) <= abs(c) / 2


def contrast_explains(saturation_ratio: float, contrast_ratio: float) -> bool:
    """Whether a change of saturation by ``saturation_ratio`` is a change of contrast's doing
    (``contrast_ratio``): a picture washed out about its mean pales too, by up to the contrast's factor
    (in log terms; a quarter more allowed for the colour's own rounding), never the other way.

    >>> contrast_explains(0.8, 0.4), contrast_explains(0.8, 1.0), contrast_explains(1.3, 0.4)
    (True, False, False)
    """
    if saturation_ratio <= 0 or contrast_ratio <= 0:
        return False
    s, c = math.log(saturation_ratio), math.log(contrast_ratio)
    return s * c > 0 and abs(s) <= 1.25 * abs(c)


def measure(image: np.ndarray) -> ImageSignals:
    """Signals of one BGR (or grey) uint8 image.

    >>> import numpy as np
    >>> s = measure(np.full((90, 160, 3), 200, np.uint8))
    >>> (s.width, s.height, round(s.aspect_ratio, 3), round(s.brightness), s.blur)
    (160, 90, 1.778, 200, 0.0)
    """
    h, w = image.shape[:2]
    grey = analysis_copy(image)
    mean = float(grey.mean())
    blur = sharpness(float(cv2.Laplacian(grey, cv2.CV_32F).var()), float(grey.std()))
    return ImageSignals(width=w, height=h, aspect_ratio=w / h, brightness=mean, blur=blur)
