"""Camera moved (domain drift): rotation and shift of a frame against a reference view of the scene.

ORB features of both views are matched (Hamming distance, Lowe's ratio test) and a similarity transform
(rotation, uniform scale, shift) is fitted with RANSAC, so that cars and people moving through the scene
are outliers of the fit and the static background decides.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping
from typing import NamedTuple

import cv2
import numpy as np
from PIL import Image

from streams.signals import ANALYSIS_WIDTH

ORB_FEATURES = 500
RATIO = 0.75  # Lowe's ratio test: best match clearly better than the second best
MIN_INLIERS = 12
MAX_REFERENCE_HEIGHT = 100_000  # px: the frame header's bound; a saved reference view beyond it is refused


class Motion(NamedTuple):
    angle_deg: float  # rotation of the frame against the reference, degrees, counter-clockwise on screen
    dx: float  # shift of the image centre, px (right is positive)
    dy: float  # px (down is positive)
    inliers: int  # matches that agree with the fitted transform
    ok: bool  # enough inliers for the figures to mean something


NO_MOTION = Motion(0.0, 0.0, 0.0, 0, False)


class _Features:
    """ORB keypoints and descriptors of one view, computed once."""

    def __init__(self, grey: np.ndarray, orb: cv2.ORB):
        keypoints, self.descriptors = orb.detectAndCompute(grey, None)
        self.points = np.float32([k.pt for k in keypoints]).reshape(-1, 2)


def _orb() -> cv2.ORB:
    return cv2.ORB_create(nfeatures=ORB_FEATURES)


def _match(ref: _Features, cur: _Features, matcher: cv2.BFMatcher) -> tuple[np.ndarray, np.ndarray]:
    if ref.descriptors is None or cur.descriptors is None or len(ref.points) < 2 or len(cur.points) < 2:
        return np.empty((0, 2), np.float32), np.empty((0, 2), np.float32)
    pairs = matcher.knnMatch(ref.descriptors, cur.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO * p[1].distance]
    src = ref.points[[m.queryIdx for m in good]] if good else np.empty((0, 2), np.float32)
    dst = cur.points[[m.trainIdx for m in good]] if good else np.empty((0, 2), np.float32)
    return src, dst


def _solve(src: np.ndarray, dst: np.ndarray, centre: tuple[float, float], min_inliers: int) -> Motion:
    if len(src) < 3:
        return Motion(0.0, 0.0, 0.0, len(src), False)
    m, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=3.0)
    if m is None:
        return NO_MOTION
    inliers = int(mask.sum())
    # M = [[s cos, s sin, tx], [-s sin, s cos, ty]] for a counter-clockwise turn (y points down), as made by
    # cv2.getRotationMatrix2D.
    angle = math.degrees(math.atan2(m[0, 1], m[0, 0]))
    cx, cy = centre
    dx = m[0, 0] * cx + m[0, 1] * cy + m[0, 2] - cx
    dy = m[1, 0] * cx + m[1, 1] * cy + m[1, 2] - cy
    # + 0.0 turns the -0.0 of an exact fit into 0.0
    return Motion(angle + 0.0, float(dx) + 0.0, float(dy) + 0.0, inliers, inliers >= min_inliers)


def estimate_motion(reference_grey: np.ndarray, frame_grey: np.ndarray, min_inliers: int = MIN_INLIERS) -> Motion:
    """Rotation and shift of ``frame_grey`` against ``reference_grey`` (uint8, same size), px of those images.

    The shift is that of the image centre, so a pure turn about the centre gives ``dx = dy = 0``.
    """
    orb = _orb()
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    src, dst = _match(_Features(reference_grey, orb), _Features(frame_grey, orb), matcher)
    h, w = reference_grey.shape[:2]
    return _solve(src, dst, ((w - 1) / 2, (h - 1) / 2), min_inliers)


class CameraMoved:
    """Flags a camera that has turned or shifted against its reference view.

    The first frame given (or :meth:`set_reference`) is the reference view: the small grey analysis copy
    (:func:`streams.signals.analysis_copy`, px of that copy). Every ``every``-th frame is compared with it
    (about 2-4 ms each on a 320 x 136 copy: ORB, matching and RANSAC; once a second is plenty for a camera at 5 fps);
    ``consecutive`` comparisons in a row with ``|angle| > threshold_deg`` or a centre shift above
    ``threshold_px`` set :attr:`drift_detected`, one comparison within both clears it. A comparison
    without enough matching background (lens covered, a black frame, a completely new view) counts as
    moved when ``lost_is_moved`` (the scene is no longer the reference one), else it is ignored.

    State: the reference view as PNG (about 32 KB as JSON for 320 x 136) and a few numbers; keypoints are
    recomputed from it after a restore.

    >>> import cv2, numpy as np
    >>> rng = np.random.default_rng(0)
    >>> scene = cv2.GaussianBlur(rng.integers(0, 256, (136, 320), dtype=np.uint8), (5, 5), 0)
    >>> d = CameraMoved(threshold_deg=2.0, threshold_px=8.0, consecutive=2)
    >>> turn = cv2.getRotationMatrix2D((160, 68), 4.0, 1.0)
    >>> for frame in [scene, scene, cv2.warpAffine(scene, turn, (320, 136)), cv2.warpAffine(scene, turn, (320, 136))]:
    ...     print(d.update(frame).drift_detected, round(d.last.angle_deg, 1))
    False 0.0
    False 0.0
    False 4.0
    True 4.0
    """

    def __init__(
        self,
        threshold_deg: float = 2.0,
        threshold_px: float = 8.0,
        consecutive: int = 3,
        every: int = 1,
        min_inliers: int = MIN_INLIERS,
        lost_is_moved: bool = True,
    ):
        self.threshold_deg = threshold_deg
        self.threshold_px = threshold_px
        self.consecutive = consecutive
        self.every = every
        self.min_inliers = min_inliers
        self.lost_is_moved = lost_is_moved
        self._orb = _orb()
        self._matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        self.reference: np.ndarray | None = None
        self._ref_features: _Features | None = None
        self._ref_png: str | None = None  # the reference as saved, encoded once (every state save needs it)
        self.seen = 0
        self.run = 0  # moved comparisons in a row
        self.last = NO_MOTION

    def set_reference(self, grey: np.ndarray) -> CameraMoved:
        """Take ``grey`` as the scene's reference view (the first frame, or an operator's choice after a
        deliberate move)."""
        self.reference = np.ascontiguousarray(grey)
        self._ref_features = _Features(self.reference, self._orb)
        self._ref_png = None
        self.run, self.last = 0, NO_MOTION
        return self

    def moved(self, m: Motion) -> bool:
        if not m.ok:
            return self.lost_is_moved
        return abs(m.angle_deg) > self.threshold_deg or math.hypot(m.dx, m.dy) > self.threshold_px

    def update(self, frame_grey_small: np.ndarray) -> CameraMoved:
        self.seen += 1
        if self.reference is None:
            return self.set_reference(frame_grey_small)
        if (self.seen - 1) % self.every:
            return self
        if frame_grey_small.shape != self.reference.shape:  # a new resolution is upstream drift, not a move
            return self
        src, dst = _match(self._ref_features, _Features(frame_grey_small, self._orb), self._matcher)
        h, w = self.reference.shape[:2]
        self.last = _solve(src, dst, ((w - 1) / 2, (h - 1) / 2), self.min_inliers)
        self.run = self.run + 1 if self.moved(self.last) else 0
        return self

    @property
    def drift_detected(self) -> bool:
        return self.run >= self.consecutive

    def to_dict(self) -> dict:
        if self.reference is not None and self._ref_png is None:
            self._ref_png = base64.b64encode(cv2.imencode(".png", self.reference)[1].tobytes()).decode()
        ref = self._ref_png if self.reference is not None else None
        return {
            "threshold_deg": self.threshold_deg,
            "threshold_px": self.threshold_px,
            "consecutive": self.consecutive,
            "every": self.every,
            "min_inliers": self.min_inliers,
            "lost_is_moved": self.lost_is_moved,
            "reference_png": ref,
            "seen": self.seen,
            "run": self.run,
            "last": list(self.last),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> CameraMoved:
        obj = cls(
            d["threshold_deg"], d["threshold_px"], d["consecutive"], d["every"], d["min_inliers"], d["lost_is_moved"]
        )
        if d["reference_png"] is not None:
            png = base64.b64decode(d["reference_png"], validate=True)
            with Image.open(io.BytesIO(png), formats=["PNG"]) as im:  # its size, before any pixel is decoded
                if im.mode != "L" or im.width > ANALYSIS_WIDTH or im.height > MAX_REFERENCE_HEIGHT:
                    raise ValueError(f"a reference view of {im.width}x{im.height} {im.mode}: not an analysis copy")
            grey = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
            if grey is None:
                raise ValueError("the reference view is not a readable PNG")
            obj.set_reference(grey)
            obj._ref_png = d["reference_png"]  # lossless: the same image, no need to encode it again
        obj.seen, obj.run, obj.last = d["seen"], d["run"], Motion(*d["last"])
        return obj
