"""Per-frame health signals, pure and cheap (well under 1 ms on a downscaled copy).

Blur and brightness are measured on a grey copy scaled to at most :data:`ANALYSIS_WIDTH` pixels wide,
so the figures of one camera are comparable over time and the cost does not grow with resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

ANALYSIS_WIDTH = 320


@dataclass(frozen=True)
class ImageSignals:
    width: int  # px
    height: int  # px
    aspect_ratio: float  # width / height
    brightness: float  # mean luma, 0-255
    blur: float  # variance of the Laplacian on the analysis copy; lower is blurrier


def analysis_copy(image: np.ndarray) -> np.ndarray:
    """Grey, at most ANALYSIS_WIDTH px wide (area interpolation keeps the mean exact enough)."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    w = grey.shape[1]
    if w > ANALYSIS_WIDTH:
        h = max(1, round(grey.shape[0] * ANALYSIS_WIDTH / w))
        grey = cv2.resize(grey, (ANALYSIS_WIDTH, h), interpolation=cv2.INTER_AREA)
    return grey


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
    blur = float(cv2.Laplacian(grey, cv2.CV_32F).var())
    return ImageSignals(width=w, height=h, aspect_ratio=w / h, brightness=mean, blur=blur)
