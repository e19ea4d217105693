from __future__ import annotations

import cv2
import numpy as np
import pytest

from streams.monitor import signals
from streams.monitor.image import ImageSignals, measure


def test_uniform_grey_has_no_contrast_colour_or_clipping():
    s = measure(np.full((100, 200, 3), 128, np.uint8))
    assert (s.width, s.height, s.aspect_ratio) == (200, 100, 2.0)
    assert s.brightness == pytest.approx(128)
    assert s.contrast == pytest.approx(0)
    assert s.saturation == pytest.approx(0)
    assert (s.under_exposed, s.over_exposed, s.blur) == (0.0, 0.0, 0.0)
    assert s.frame_diff is None
    assert not s.black


def test_half_black_half_white_is_half_under_and_half_over_exposed():
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, 100:] = 255
    s = measure(image)
    assert s.brightness == pytest.approx(127.5)
    assert s.contrast == pytest.approx(127.5)
    assert s.under_exposed == pytest.approx(0.5)
    assert s.over_exposed == pytest.approx(0.5)
    assert not s.black


def test_pure_red_is_fully_saturated_with_its_luma():
    s = measure(np.full((90, 160, 3), (0, 0, 255), np.uint8))
    assert s.saturation == pytest.approx(255)
    assert s.brightness == pytest.approx(76, abs=0.5)  # 0.299 x 255


def test_black_frame_is_black_and_a_dark_frame_with_detail_is_not():
    assert measure(np.zeros((120, 160, 3), np.uint8)).black
    night = np.full((120, 160, 3), 5, np.uint8)
    night[::10, ::10] = 255  # street lights
    s = measure(night)
    assert s.brightness < 10 and s.contrast > 5
    assert not s.black


def test_frame_diff_is_mean_absolute_difference_against_the_previous_small_copy():
    first = measure(np.full((90, 160, 3), 100, np.uint8))
    second = measure(np.full((90, 160, 3), 110, np.uint8), previous_small=first.small)
    assert second.frame_diff == pytest.approx(10)
    same = measure(np.full((90, 160, 3), 110, np.uint8), previous_small=second.small)
    assert same.frame_diff == 0.0


def test_frame_diff_is_none_when_the_size_changed():
    first = measure(np.zeros((90, 160, 3), np.uint8))
    assert measure(np.zeros((100, 160, 3), np.uint8), previous_small=first.small).frame_diff is None


def test_brightness_and_blur_match_the_worker_signals(street_frame):
    for image in (street_frame, cv2.resize(street_frame, (1920, 1080))):
        old, new = signals.measure(image), measure(image)
        assert isinstance(new, signals.ImageSignals)
        assert new.brightness == pytest.approx(old.brightness, rel=1e-9)
        assert new.blur == pytest.approx(old.blur, rel=1e-4)


def test_small_copy_is_at_most_320_wide_and_not_the_caller_array():
    big = measure(np.zeros((1080, 1920, 3), np.uint8))
    assert big.small.shape == (180, 320)
    grey = np.zeros((90, 160), np.uint8)
    s = measure(grey)
    assert s.small is not grey and s.saturation == 0.0


def test_signals_compare_equal_without_the_small_copy():
    a, b = measure(np.zeros((90, 160, 3), np.uint8)), measure(np.zeros((90, 160, 3), np.uint8))
    assert isinstance(a, ImageSignals) and a == b
