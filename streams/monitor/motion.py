"""Camera moved (domain drift): rotation and shift of a frame against a reference view of the scene.

ORB features of both views are matched (Hamming distance, Lowe's ratio test) and a similarity transform
(rotation, uniform scale, shift) is fitted with RANSAC, so that cars and people moving through the scene
are outliers of the fit and the static background decides.

A large object moving in front of a fixed camera (a person in front of a camera fixed inside a vehicle) can
hold more matches than the background, and RANSAC then fits its motion. Two checks keep that from counting
as a move: the matches that did not follow the fit but stayed where they were (``still``: the background has
not moved), and the share of the view the fit's inliers cover (``spread``: a moved camera moves everything).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import cv2
import numpy as np
from PIL import Image

from streams.monitor.base import Change, Detector, Frame, Observation, flips, statistic
from streams.monitor.signals import ANALYSIS_WIDTH
from streams.monitor.state import flag, integer

ORB_FEATURES = 500
RATIO = 0.75  # Lowe's ratio test: best match clearly better than the second best
MIN_INLIERS = 12
RANSAC_PX = 3.0  # a match within this of the fitted transform is an inlier
GRID = 4  # spread: the view cut into GRID x GRID cells
MIN_SPREAD = 0.5  # share of the matched cells that a move's inliers must cover
STILL_SHARE = 0.25  # still matches, as a share of the inliers, that say the background stayed put
PRECISE_INLIERS = 60  # a fit this well supported, and within PRECISE_RESIDUAL_PX, measures a small shift
PRECISE_RESIDUAL_PX = 1.5  # root mean square distance of the inliers from the fit
AGREE_PX = 2.0  # successive fits of a moved camera agree within this shift
AGREE_DEG = 0.5  # and this turn
STATE_VERSION = 2  # of CameraMoved.to_dict; version 1 had no "version"
# Verdicts of one comparison (CameraMoved.judge)
MOVED, SMALL, STILL, UNSURE, LOST = "moved", "small", "still", "unsure", "lost"
MAX_REFERENCE_HEIGHT = 100_000  # px: the frame header's bound; a saved reference view beyond it is refused


class Motion(NamedTuple):
    angle_deg: float  # rotation of the frame against the reference, degrees, counter-clockwise on screen
    dx: float  # shift of the image centre, px (right is positive)
    dy: float  # px (down is positive)
    inliers: int  # matches that agree with the fitted transform
    ok: bool  # enough inliers for the figures to mean something
    residual: float = 0.0  # px, root mean square distance of the inliers from the fit
    still: int = 0  # matches outside the fit that stayed where they were in the reference
    spread: float = 1.0  # share of the grid cells holding matches that hold an inlier too


NO_MOTION = Motion(0.0, 0.0, 0.0, 0, False)


class _Features:
    """ORB keypoints and descriptors of one view, computed once, spread over the view: the strongest
    keypoints of each of the GRID x GRID cells, so that a large textured object cannot take them all."""

    def __init__(self, grey: np.ndarray, orb: cv2.ORB):
        keypoints = orb.detect(grey, None)
        h, w = grey.shape[:2]
        cells: dict[tuple[int, int], list] = {}
        for k in keypoints:
            cells.setdefault(
                (min(int(k.pt[0] * GRID / w), GRID - 1), min(int(k.pt[1] * GRID / h), GRID - 1)), []
            ).append(k)
        per_cell = ORB_FEATURES // (GRID * GRID)
        kept = [k for ks in cells.values() for k in sorted(ks, key=lambda k: -k.response)[:per_cell]]
        keypoints, self.descriptors = orb.compute(grey, kept) if kept else ((), None)
        self.points = np.float32([k.pt for k in keypoints]).reshape(-1, 2)


def _orb() -> cv2.ORB:
    return cv2.ORB_create(nfeatures=4 * ORB_FEATURES)


def _match(ref: _Features, cur: _Features, matcher: cv2.BFMatcher) -> tuple[np.ndarray, np.ndarray]:
    if ref.descriptors is None or cur.descriptors is None or len(ref.points) < 2 or len(cur.points) < 2:
        return np.empty((0, 2), np.float32), np.empty((0, 2), np.float32)
    pairs = matcher.knnMatch(ref.descriptors, cur.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO * p[1].distance]
    src = ref.points[[m.queryIdx for m in good]] if good else np.empty((0, 2), np.float32)
    dst = cur.points[[m.trainIdx for m in good]] if good else np.empty((0, 2), np.float32)
    return src, dst


def _cells(points: np.ndarray, size: tuple[int, int]) -> set[tuple[int, int]]:
    w, h = size
    cols = np.clip((points[:, 0] * GRID / max(w, 1)).astype(int), 0, GRID - 1)
    rows = np.clip((points[:, 1] * GRID / max(h, 1)).astype(int), 0, GRID - 1)
    return set(zip(cols.tolist(), rows.tolist(), strict=True))


def _solve(src: np.ndarray, dst: np.ndarray, centre: tuple[float, float], min_inliers: int) -> Motion:
    if len(src) < 3:
        return Motion(0.0, 0.0, 0.0, len(src), False)
    m, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PX)
    if m is None:
        return NO_MOTION
    inlier = mask.ravel().astype(bool)
    inliers = int(inlier.sum())
    fitted = src @ m[:, :2].T + m[:, 2]
    residual = float(np.sqrt(np.mean(np.sum((fitted[inlier] - dst[inlier]) ** 2, axis=1)))) if inliers else 0.0
    still = int(np.sum(~inlier & (np.hypot(*(dst - src).T) <= RANSAC_PX)))
    size = (2 * centre[0] + 1, 2 * centre[1] + 1)
    spread = len(_cells(src[inlier], size)) / len(_cells(src, size))
    # M = [[s cos, s sin, tx], [-s sin, s cos, ty]] for a counter-clockwise turn (y points down), as made by
    # cv2.getRotationMatrix2D.
    angle = math.degrees(math.atan2(m[0, 1], m[0, 0]))
    cx, cy = centre
    dx = m[0, 0] * cx + m[0, 1] * cy + m[0, 2] - cx
    dy = m[1, 0] * cx + m[1, 1] * cy + m[1, 2] - cy
    # + 0.0 turns the -0.0 of an exact fit into 0.0
    ok = inliers >= min_inliers
    return Motion(
        angle + 0.0, float(dx) + 0.0, float(dy) + 0.0, inliers, ok, round(residual, 3), still, round(spread, 3)
    )


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
    (:func:`streams.monitor.signals.analysis_copy`, px of that copy). Every ``every``-th frame is compared with it
    (a few ms each on a 320 x 136 copy: ORB, matching and RANSAC; once a second is plenty for a camera at 5 fps).
    Each comparison is one of:

    - moved: ``|angle| > threshold_deg`` or a centre shift above ``threshold_px``;
    - slightly moved: a shift above ``threshold_px * small_share`` (4 px at the defaults, 8 px of a 640 px frame)
      measured by a precise fit (at least ``precise_inliers`` inliers within ``precise_residual_px``: hundreds
      of inliers place a shift to a fraction of a pixel);
    - still: within those, or the background stayed where it was (``still`` matches, at least ``min_inliers``
      and ``STILL_SHARE`` of the inliers): a large object moving in front of the camera was fitted, not the view;
    - unsure, which neither counts nor clears: a move fitted on inliers that cover less than ``MIN_SPREAD`` of
      the view's matched cells (one object, not the whole view), or a shift between both thresholds that the fit
      cannot place precisely.

    ``consecutive`` moved comparisons in a row, or ``small_consecutive`` moved or slightly moved ones (twice as
    many by default: a small shift must last longer), each agreeing with the one before (within ``AGREE_PX`` and
    ``AGREE_DEG``: a camera that moved stays where it moved to, a person walking past does not) set
    :attr:`drift_detected`; one still comparison clears it. A comparison without enough matching background (lens
    covered, a black frame, a completely new view) counts as moved when ``lost_is_moved`` (the scene is no longer
    the reference one), else as still.

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
        small_share: float = 0.5,
        small_consecutive: int | None = None,
        precise_inliers: int = PRECISE_INLIERS,
        precise_residual_px: float = PRECISE_RESIDUAL_PX,
    ):
        self.threshold_deg = threshold_deg
        self.threshold_px = threshold_px
        self.consecutive = consecutive
        self.every = every
        self.min_inliers = min_inliers
        self.lost_is_moved = lost_is_moved
        self.small_share = small_share
        self.small_consecutive = 2 * consecutive if small_consecutive is None else small_consecutive
        self.precise_inliers = precise_inliers
        self.precise_residual_px = precise_residual_px
        self._orb = _orb()
        self._matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        self.reference: np.ndarray | None = None
        self._ref_features: _Features | None = None
        self._ref_png: str | None = None  # the reference as saved, encoded once (every state save needs it)
        self.seen = 0
        self.run = 0  # moved comparisons in a row, agreeing
        self.small_run = 0  # moved or slightly moved comparisons in a row, agreeing
        self.detected = False
        self.last = NO_MOTION
        self.verdict = STILL  # of the last comparison
        self._counted = NO_MOTION  # the last comparison counted in the runs

    def set_reference(self, grey: np.ndarray) -> CameraMoved:
        """Take ``grey`` as the scene's reference view (the first frame, or an operator's choice after a
        deliberate move)."""
        self.reference = np.ascontiguousarray(grey)
        self._ref_features = _Features(self.reference, self._orb)
        self._ref_png = None
        self.run, self.small_run, self.detected, self.last, self.verdict = 0, 0, False, NO_MOTION, STILL
        self._counted = NO_MOTION
        return self

    def precise(self, m: Motion) -> bool:
        return m.ok and m.inliers >= self.precise_inliers and m.residual <= self.precise_residual_px

    def judge(self, m: Motion) -> str:
        """The comparison's verdict: MOVED, SMALL, STILL, UNSURE or LOST (see the class)."""
        if not m.ok:
            return LOST if self.lost_is_moved else STILL
        shift = math.hypot(m.dx, m.dy)
        big = abs(m.angle_deg) > self.threshold_deg or shift > self.threshold_px
        if not big and shift <= self.threshold_px * self.small_share:
            return STILL
        if not big and not self.precise(m):
            return UNSURE
        if m.still >= max(self.min_inliers, STILL_SHARE * m.inliers):
            return STILL  # the background stayed put: a large object moved in front of it
        if m.spread < MIN_SPREAD:
            return UNSURE
        return MOVED if big else SMALL

    def moved(self, m: Motion) -> bool:
        """Whether ``m`` alone counts as a move (moved, slightly moved or a lost view counted as moved)."""
        return self.judge(m) in (MOVED, SMALL, LOST)

    def _count(self, verdict: str, m: Motion) -> None:
        if verdict == UNSURE:
            return
        if verdict == STILL:
            self.run = self.small_run = 0
            self.detected = False
            return
        if self.small_run and verdict != LOST and self._counted.ok and not _agree(m, self._counted):
            self.run = self.small_run = 0  # another place than the last one: something moving, not the camera
        self.small_run += 1
        self.run = self.run + 1 if verdict in (MOVED, LOST) else 0
        self._counted = m
        self.detected = self.detected or self.run >= self.consecutive or self.small_run >= self.small_consecutive

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
        self.verdict = self.judge(self.last)
        self._count(self.verdict, self.last)
        return self

    @property
    def drift_detected(self) -> bool:
        return self.detected

    def to_dict(self) -> dict:
        if self.reference is not None and self._ref_png is None:
            self._ref_png = base64.b64encode(cv2.imencode(".png", self.reference)[1].tobytes()).decode()
        ref = self._ref_png if self.reference is not None else None
        return {
            "version": STATE_VERSION,
            "threshold_deg": self.threshold_deg,
            "threshold_px": self.threshold_px,
            "consecutive": self.consecutive,
            "every": self.every,
            "min_inliers": self.min_inliers,
            "lost_is_moved": self.lost_is_moved,
            "small_share": self.small_share,
            "small_consecutive": self.small_consecutive,
            "precise_inliers": self.precise_inliers,
            "precise_residual_px": self.precise_residual_px,
            "reference_png": ref,
            "seen": self.seen,
            "run": self.run,
            "small_run": self.small_run,
            "detected": self.detected,
            "last": list(self.last),
            "counted": list(self._counted),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> CameraMoved:
        """The check ``d`` describes. A state of the first version (no ``version``) keeps its reference view
        and settings; its runs start over, and a move it had detected is detected again within ``consecutive``
        comparisons."""
        new = d.get("version") == STATE_VERSION
        extra = {k: d[k] for k in _EXTRA if k in d} if new else {}
        obj = cls(
            d["threshold_deg"], d["threshold_px"], d["consecutive"], d["every"], d["min_inliers"], d["lost_is_moved"],
            **extra,
        )  # fmt: skip
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
        obj.seen, obj.last = d["seen"], Motion(*d["last"])
        if new:
            obj.run, obj.small_run = integer(d["run"], "run"), integer(d["small_run"], "small_run")
            obj.detected = flag(d["detected"], "detected")
            obj._counted = Motion(*d["counted"])
        return obj


_EXTRA = ("small_share", "small_consecutive", "precise_inliers", "precise_residual_px")


def _agree(a: Motion, b: Motion) -> bool:
    """Two fits that place the view alike: the same move seen twice."""
    return abs(a.angle_deg - b.angle_deg) <= AGREE_DEG and abs(a.dx - b.dx) <= AGREE_PX and abs(a.dy - b.dy) <= AGREE_PX


class MovedDetector(Detector):
    """:class:`CameraMoved` as a detector of the camera's monitor: ``domain_drift`` (``camera_moved``), checked
    every ``motion_every`` frames (0: off)."""

    name = "moved"
    missing = "none"  # a state saved with the check off keeps it off until the references are learned again

    def __init__(self, inner: CameraMoved):
        self.inner = inner

    @classmethod
    def new(cls, settings: Any, camera_id: str) -> MovedDetector | None:
        s = settings
        if not s.motion_every:
            return None
        return cls(
            CameraMoved(
                threshold_deg=s.motion_threshold_deg,
                threshold_px=s.motion_threshold_px,
                consecutive=3,
                every=s.motion_every,
                lost_is_moved=False,  # a lost view is a black or covered lens: a device fault, not a move
            )
        )

    def observe(self, obs: Observation) -> list[Change]:
        if not isinstance(obs, Frame):
            return []
        mv = self.inner
        was = mv.drift_detected
        mv.update(obs.small)
        return [Change(*f, *self._value()) for f in flips(was, mv.drift_detected, "domain_drift", "camera_moved")]

    def _value(self) -> tuple[float, float, str]:
        last = self.inner.last
        shift = math.hypot(last.dx, last.dy)
        text = f"turned {last.angle_deg:.1f} degrees and shifted {shift:.0f} px against its reference view"
        return last.angle_deg, self.inner.threshold_deg, text

    def brewing(self) -> set[str]:
        return {"domain_drift:camera_moved"} if self.inner.run and not self.inner.drift_detected else set()

    def statistics(self) -> list:
        """``orb_affine``, ``rotation_deg`` and ``shift_px``: the camera's measured turn and shift against its
        reference view, and their thresholds (when the last comparison found enough matches)."""
        mv = self.inner
        if not mv.last.ok:
            return []
        turn, shift = abs(mv.last.angle_deg), math.hypot(mv.last.dx, mv.last.dy)
        return [
            *statistic("orb_affine", "rotation_deg", turn, mv.threshold_deg, mv.drift_detected, 1),
            *statistic("orb_affine", "shift_px", shift, mv.threshold_px, mv.drift_detected, 1),
        ]

    def configure(self, settings: Any) -> None:
        self.inner.threshold_deg, self.inner.threshold_px = settings.motion_threshold_deg, settings.motion_threshold_px

    def essential(self) -> object:
        return self.inner.drift_detected

    def to_dict(self) -> dict:
        return self.inner.to_dict()

    @classmethod
    def from_dict(cls, d: dict) -> MovedDetector:
        return cls(CameraMoved.from_dict(d))
