from __future__ import annotations

import cv2
import numpy as np
import pytest

from streams.monitor.motion import CameraMoved, estimate_motion
from streams.signals import analysis_copy

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
    assert (b.run, b.last) == (a.run, a.last)
    assert b.update(turned(ref, 4.0, 0, 0)).drift_detected
