from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from streams.monitor.motion import MOVED, SMALL, STILL, UNSURE, CameraMoved, Motion, estimate_motion
from streams.monitor.signals import analysis_copy

from .conftest import through_json


def turned(grey: np.ndarray, angle_deg: float, dx: float, dy: float) -> np.ndarray:
    """The view of a camera turned by angle_deg (counter-clockwise on screen) about the centre, then shifted."""
    h, w = grey.shape
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle_deg, 1.0)
    m[:, 2] += (dx, dy)
    return cv2.warpAffine(grey, m, (w, h))


@pytest.fixture(scope="module")
def street_grey(street_frame) -> np.ndarray:
    return cv2.cvtColor(street_frame, cv2.COLOR_BGR2GRAY)


def test_a_turned_and_shifted_view_gives_its_rotation_and_shift_back(street_grey):
    m = estimate_motion(street_grey, turned(street_grey, 5.0, 12, -8))
    assert m.ok and m.inliers >= 50
    assert m.angle_deg == pytest.approx(5.0, abs=1.0)
    assert (m.dx, m.dy) == (pytest.approx(12, abs=2), pytest.approx(-8, abs=2))


def test_a_turn_the_other_way_has_the_other_sign(street_grey):
    m = estimate_motion(street_grey, turned(street_grey, -3.0, 0, 0))
    assert m.angle_deg == pytest.approx(-3.0, abs=1.0)
    assert abs(m.dx) < 2 and abs(m.dy) < 2


def test_the_identical_view_gives_no_motion(street_grey):
    m = estimate_motion(street_grey, street_grey)
    assert m.ok
    assert abs(m.angle_deg) < 0.1 and abs(m.dx) < 0.5 and abs(m.dy) < 0.5


def test_a_featureless_view_is_not_ok(street_grey):
    assert not estimate_motion(street_grey, np.zeros_like(street_grey)).ok


def test_camera_moved_needs_consecutive_moved_frames_and_clears_when_back(street_frame):
    ref = analysis_copy(street_frame)  # 320 x 136: the shift halves with the scale
    moved = turned(ref, 5.0, 6, -4)
    d = CameraMoved(threshold_deg=2.0, threshold_px=5.0, consecutive=2)
    verdicts = [d.update(f).drift_detected for f in (ref, ref, moved, moved, moved, ref)]
    assert verdicts == [False, False, False, True, True, False]


def test_a_shift_alone_counts_as_a_move(street_frame):
    ref = analysis_copy(street_frame)
    d = CameraMoved(threshold_deg=2.0, threshold_px=5.0, consecutive=1).set_reference(ref)
    assert d.update(turned(ref, 0.0, 8, 0)).drift_detected
    assert d.last.dx == pytest.approx(8, abs=1.5)


def test_a_lost_view_counts_as_moved_only_when_asked(street_frame):
    ref = analysis_copy(street_frame)
    black = np.zeros_like(ref)
    assert CameraMoved(consecutive=1).set_reference(ref).update(black).drift_detected
    assert not CameraMoved(consecutive=1, lost_is_moved=False).set_reference(ref).update(black).drift_detected


def test_only_every_kth_frame_is_compared(street_frame):
    ref = analysis_copy(street_frame)
    moved = turned(ref, 5.0, 0, 0)
    d = CameraMoved(consecutive=1, every=3)
    verdicts = [d.update(f).drift_detected for f in (ref, moved, moved, moved)]
    assert verdicts == [False, False, False, True]  # frames 1 and 2 skipped, frame 3 compared


def test_a_new_resolution_is_not_a_move(street_frame):
    ref = analysis_copy(street_frame)
    d = CameraMoved(consecutive=1).set_reference(ref)
    assert not d.update(cv2.resize(ref, (160, 68))).drift_detected


def test_camera_moved_state_survives_a_json_round_trip(street_frame):
    ref = analysis_copy(street_frame)
    a = CameraMoved(consecutive=2).set_reference(ref)
    a.update(turned(ref, 4.0, 0, 0))
    b = CameraMoved.from_dict(through_json(a.to_dict()))
    np.testing.assert_array_equal(a.reference, b.reference)  # PNG is lossless
    assert (b.run, b.small_run, b.detected, b.last) == (a.run, a.small_run, a.detected, a.last)
    assert b.update(turned(ref, 4.0, 0, 0)).drift_detected
    assert CameraMoved.from_dict(through_json(b.to_dict())).drift_detected


# -- views a fixed camera sees, from the stills the installed packages ship ---------------------------------


def _cover(image: np.ndarray, w: int, h: int) -> np.ndarray:
    """``image`` as grey, scaled to cover w x h and cropped to it (as the scenarios' stills are)."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    s = max(w / grey.shape[1], h / grey.shape[0])
    r = cv2.resize(grey, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    y, x = (r.shape[0] - h) // 2, (r.shape[1] - w) // 2
    return r[y : y + h, x : x + w]


def _noisy(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 640 px frame with fresh sensor noise, as the worker's analysis copy (320 px)."""
    return analysis_copy(np.clip(grey + rng.normal(0, 2, grey.shape), 0, 255).astype(np.uint8))


def _shifted(grey: np.ndarray, angle_deg: float, dx: float) -> np.ndarray:
    h, w = grey.shape
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle_deg, 1.0)
    m[0, 2] += dx
    return cv2.warpAffine(grey, m, (w, h), borderMode=cv2.BORDER_REFLECT)


def _as_worker_runs_it() -> CameraMoved:
    """The check as the camera monitor configures it by default (every 10th frame, 3 in a row)."""
    return CameraMoved(threshold_deg=2.0, threshold_px=8.0, consecutive=3, every=10, lost_is_moved=False)


@pytest.mark.parametrize("background", ["camera", "coffee", "astronaut"])
def test_a_large_object_moving_in_front_of_a_fixed_camera_is_not_a_move(background):
    # A camera fixed inside a vehicle: the view behind stays put, a person-sized textured figure (40 % of the
    # width, the whole height) sways across it, in the reference view too, for 60 comparisons.
    rng = np.random.default_rng(7)
    scene = _cover(getattr(skimage.data, background)(), 640, 360)
    figure = _cover(skimage.data.chelsea() if background == "astronaut" else skimage.data.astronaut(), 260, 360)
    d = _as_worker_runs_it()
    for i in range(600):
        x = int(50 + 200 * np.sin(i / 40))
        frame = scene.copy()
        x0, x1 = max(0, x), min(640, x + figure.shape[1])
        frame[:, x0:x1] = figure[:, x0 - x : x1 - x]
        assert not d.update(_noisy(frame, rng)).drift_detected, (i, d.last)


@pytest.mark.parametrize("still", ["astronaut", "coffee", "chelsea"])
@pytest.mark.parametrize(
    ("angle_deg", "dx", "checks"),
    [(5.0, 0, 3), (0.0, 30, 3), (0.0, 12, 6)],  # dx: px of the 640 px frame (half that on the analysis copy)
)
def test_a_turned_or_shifted_camera_is_found_within_a_few_comparisons(still, angle_deg, dx, checks):
    rng = np.random.default_rng(3)
    scene = _cover(getattr(skimage.data, still)(), 640, 360)
    moved = _shifted(scene, angle_deg, dx)
    d = _as_worker_runs_it()
    for _ in range(160):
        assert not d.update(_noisy(scene, rng)).drift_detected
    found = next((i for i in range(100) if d.update(_noisy(moved, rng)).drift_detected), None)
    assert found is not None and found < checks * 10, (found, d.last)  # in frames after the move
    assert d.last.dx == pytest.approx(dx / 2, abs=1.0)  # on the 320 px copy
    back = next((i for i in range(30) if not d.update(_noisy(scene, rng)).drift_detected), None)
    assert back is not None and back < 10  # the next comparison clears it


def test_a_small_shift_needs_a_precise_fit_and_twice_the_comparisons():
    d = CameraMoved(consecutive=2)
    precise = Motion(0.0, 6.0, 0.0, 200, True, 0.5, 0, 1.0)
    assert d.judge(precise) == SMALL
    assert d.judge(precise._replace(inliers=20)) == UNSURE  # too few inliers to place 6 px
    assert d.judge(precise._replace(residual=2.5)) == UNSURE  # a loose fit
    assert d.judge(precise._replace(dx=3.0)) == STILL
    assert d.judge(precise._replace(dx=12.0, inliers=20)) == MOVED  # beyond threshold_px, no precision needed
    assert d.small_consecutive == 4


def test_a_move_fitted_on_part_of_the_view_is_not_a_move():
    d = CameraMoved(consecutive=1)
    fit = Motion(0.0, 40.0, 0.0, 150, True, 0.7, 0, 1.0)
    assert d.judge(fit) == MOVED
    assert d.judge(fit._replace(still=60)) == STILL  # the rest of the view stayed where it was
    assert d.judge(fit._replace(spread=0.3)) == UNSURE  # the inliers sit on one object


def test_moves_that_do_not_agree_are_something_moving_not_the_camera():
    d = CameraMoved(consecutive=3)
    d.reference = np.zeros((4, 4), np.uint8)  # not used by _count
    for dx in (20.0, 40.0, 60.0, 80.0, 60.0, 40.0):  # a figure walking to and fro
        d._count(MOVED, Motion(0.0, dx, 0.0, 150, True, 0.7, 0, 1.0))
        assert not d.drift_detected
    for _ in range(3):  # a camera that moved stays where it moved to
        d._count(MOVED, Motion(0.0, 30.0, 0.5, 150, True, 0.7, 0, 1.0))
    assert d.drift_detected


def test_a_state_of_the_first_version_is_read_and_its_runs_start_over(street_frame):
    ref = analysis_copy(street_frame)
    a = CameraMoved(consecutive=2).set_reference(ref)
    a.update(turned(ref, 4.0, 0, 0))
    old = {k: v for k, v in a.to_dict().items() if k in _VERSION_1}
    old["last"] = old["last"][:5]
    b = CameraMoved.from_dict(through_json(old))
    np.testing.assert_array_equal(a.reference, b.reference)
    assert (b.run, b.small_run, b.detected, b.last.inliers) == (0, 0, False, a.last.inliers)
    assert not b.update(turned(ref, 4.0, 0, 0)).drift_detected
    assert b.update(turned(ref, 4.0, 0, 0)).drift_detected


_VERSION_1 = ("threshold_deg", "threshold_px", "consecutive", "every", "min_inliers", "lost_is_moved")
_VERSION_1 += ("reference_png", "seen", "run", "last")
