import time

import cv2
import numpy as np

from streams.monitor import signals


def test_size_and_aspect_ratio(street_frames):
    s = signals.measure(street_frames[0])
    assert (s.width, s.height) == (640, 272)
    assert abs(s.aspect_ratio - 640 / 272) < 1e-9


def test_blurred_copy_scores_lower_blur(street_frames):
    img = street_frames[5]
    sharp = signals.measure(img).blur
    soft = signals.measure(cv2.GaussianBlur(img, (0, 0), 3)).blur
    assert soft < sharp / 4


def test_darker_copy_scores_lower_brightness(street_frames):
    img = street_frames[5]
    dark = cv2.convertScaleAbs(img, alpha=0.5)
    assert abs(signals.measure(dark).brightness - signals.measure(img).brightness / 2) < 3


def test_brightness_is_mean_luma():
    grey = np.full((100, 400, 3), 77, np.uint8)
    assert abs(signals.measure(grey).brightness - 77) < 1e-6


def test_large_frames_are_measured_on_a_downscaled_copy():
    big = np.random.default_rng(0).integers(0, 255, (1080, 1920, 3), np.uint8)
    assert signals.analysis_copy(big).shape == (180, 320)
    t0 = time.perf_counter()
    s = signals.measure(big)
    assert s.width == 1920 and s.height == 1080
    assert time.perf_counter() - t0 < 1.0  # sanity bound only; speed lives in benchmarks
