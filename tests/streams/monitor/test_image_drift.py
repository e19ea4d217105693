"""The image-signal detectors (range rule and distribution tests) on real footage: quiet on JPEG quality and
light that vary, and naming the signal that moved (contrast as contrast, a dusk as brightness, a soft lens
as blur).

Frames are the real street footage and a scikit-image still (a fixed camera: sensor noise on each frame),
JPEG-encoded as a camera sends them, then measured as the worker measures them. Long streams replay
measured frames from a table (frame x light x JPEG quality), each measured once, so that thousands of
frames cost seconds.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from core.contracts import FrameMetrics
from core.monitoring import MonitorSettings
from streams.monitor import image
from streams.monitor.camera import DISTRIBUTION_SIGNALS
from streams.monitor.range import CameraHealth
from streams.monitor.windows import MultiKS

QUALITIES = (40, 50, 60, 70, 80, 90)  # JPEG quality, drawn at random for every frame
GAINS = (0.96, 0.98, 1.0, 1.02, 1.04)  # light, a few percent either way
CONSECUTIVE = MonitorSettings().consecutive  # frames out of range in a row before the range rule alerts


class Camera:
    """The range rule and the distribution tests of one camera at the default settings; ``raised`` lists
    (frame, signal) of every alert raised, ``*_distribution`` for the distribution tests'."""

    def __init__(self) -> None:
        s = MonitorSettings()
        self.health = CameraHealth.new("cam", warmup=s.warmup, tolerance=s.tolerance, consecutive=s.consecutive)
        self.ks = MultiKS(DISTRIBUTION_SIGNALS, s.ks_reference, s.ks_window, s.ks_every, s.ks_alpha)
        self.frames = 0
        self.raised: list[tuple[int, str]] = []

    def send(self, s: image.ImageSignals) -> None:
        i = self.frames
        self.frames += 1
        m = FrameMetrics(
            frame_id=f"cam:0:{i}", camera_id="cam", seq=i, captured_at=1000.0 + i / 5, processed_at=1000.0 + i / 5,
            model_name="m", model_version="1", encoding="jpeg", bytes=1, width=s.width, height=s.height,
            aspect_ratio=s.aspect_ratio, brightness=s.brightness, blur=s.blur, contrast=s.contrast,
            saturation=s.saturation, inference_ms=1.0, detections=0,
        )  # fmt: skip
        self.raised += [(i, a.signal) for a in self.health.observe(m, cooldown_s=0) if a.status == "raised"]
        before = set(self.ks.drifted)
        self.ks.update({n: round(float(getattr(m, n)), 3) for n in DISTRIBUTION_SIGNALS})
        self.raised += [(i, f"{n}_distribution") for n in sorted(self.ks.drifted - before)]


def jpeg(frame: np.ndarray, quality: int = 75, gain: float = 1.0) -> np.ndarray:
    """``frame`` under ``gain`` times the light, as the camera's JPEG at ``quality`` decodes."""
    if gain != 1.0:
        frame = np.clip(np.rint(frame.astype(np.float32) * gain), 0, 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)


def still(name: str, width: int, copies: int = 8, noise: float = 2.0) -> list[np.ndarray]:
    """A scikit-image photo ``width`` px wide, with fresh sensor noise on each of ``copies``."""
    photo = np.ascontiguousarray(getattr(data, name)()[:, :, ::-1])
    photo = cv2.resize(photo, (width, round(photo.shape[0] * width / photo.shape[1])), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    return [np.clip(photo + rng.normal(0, noise, photo.shape), 0, 255).astype(np.uint8) for _ in range(copies)]


def back_and_forth(frames: list, i: int):
    """Frame ``i`` of ``frames`` played forwards then backwards, so that the view never jumps."""
    k = i % (2 * len(frames) - 2)
    return frames[k if k < len(frames) else 2 * len(frames) - 2 - k]


def table(frames: list[np.ndarray]) -> list[list[list[image.ImageSignals]]]:
    """``[frame][gain][quality]``: each frame measured once under each light and JPEG quality."""
    return [[[image.measure(jpeg(f, q, g)) for q in QUALITIES] for g in GAINS] for f in frames]


@pytest.fixture(scope="module")
def street_table(street_frames):
    return table(street_frames)


@pytest.fixture(scope="module")
def still_table():
    return table(still("coffee", 320))  # 320 px: the analysis copy is the frame, JPEG's loss unsoftened


def jittered(measured, n: int, seed: int, moving: bool) -> list[image.ImageSignals]:
    """``n`` frames with a JPEG quality drawn for each and a light wandering slowly a few percent (a period
    of 100-300 s at 5 frames/s); a moving scene plays back and forth, a still draws its noisy copies."""
    rng = np.random.default_rng(seed)
    period, phase = rng.uniform(500, 1500), rng.uniform(0, 2 * np.pi)
    out = []
    for i in range(n):
        frame = back_and_forth(measured, i) if moving else measured[rng.integers(len(measured))]
        light = 0.04 * np.sin(2 * np.pi * i / period + phase)
        g = int(np.argmin([abs(1 + light - gain) for gain in GAINS]))
        out.append(frame[g][rng.integers(len(QUALITIES))])
    return out


@pytest.mark.parametrize("seed", range(4))
def test_jpeg_quality_and_light_that_vary_raise_nothing(street_table, still_table, seed):
    """JPEG quality drawn between 40 and 90 for every frame and light a few percent either way, over
    3,000 frames (10 minutes at 5 frames/s) per camera: no alert. Before blur was sharpness at a standard
    contrast (light moved it twice as much as brightness, and the quality's noise hid that slow wander
    from the tests' autocorrelation), the still camera raised blur distribution alerts."""
    for measured, moving in ((street_table, True), (still_table, False)):
        cam = Camera()
        for s in jittered(measured, 3000, seed, moving):
            cam.send(s)
        assert cam.raised == []


def test_light_that_varies_a_few_percent_raises_nothing(street_frames):
    """Light a few percent either way, frame to frame and slowly, at a fixed quality: no alert."""
    rng = np.random.default_rng(5)
    cam = Camera()
    for i in range(1200):
        gain = 1 + 0.03 * np.sin(i / 60) + rng.normal(0, 0.01)
        cam.send(image.measure(jpeg(back_and_forth(street_frames, i), 75, gain)))
    assert cam.raised == []


def contrast(frame: np.ndarray, factor: float) -> np.ndarray:
    """The gateway's contrast event: the spread about the mean times ``factor``."""
    mean = frame.reshape(-1, 3).mean(axis=0)
    return np.clip(np.rint((frame.astype(np.float32) - mean) * factor + mean), 0, 255).astype(np.uint8)


# Events start once every test of the default settings is ready: the range rule's reference and the
# distribution tests' reference and first window.
AT = MonitorSettings().ks_reference + MonitorSettings().ks_window


def stream_with_event(frames, event, at: int = AT, n: int = AT + 200) -> Camera:
    cam = Camera()
    for i in range(n):
        frame = back_and_forth(frames, i)
        cam.send(image.measure(jpeg(event(frame, i - at) if i >= at else frame)))
    return cam


@pytest.mark.parametrize("source", ["street", "still"])
def test_a_lower_contrast_is_named_contrast_not_blur(street_frames, source):
    frames = street_frames if source == "street" else still("astronaut", 640)
    cam = stream_with_event(frames, lambda f, _: contrast(f, 0.4))
    signals = {signal for _, signal in cam.raised}
    # the range rule's frames in a row (MonitorSettings.consecutive), and JPEG
    assert cam.raised and cam.raised[0][0] - AT <= CONSECUTIVE + 2, cam.raised
    assert signals <= {"contrast", "contrast_distribution"}, cam.raised


@pytest.mark.parametrize("sigma", [2.0, 4.0])
@pytest.mark.parametrize("source", ["street", "still"])
def test_a_softer_picture_is_still_blur(street_frames, source, sigma):
    frames = street_frames if source == "street" else still("astronaut", 640)
    cam = stream_with_event(frames, lambda f, _: cv2.GaussianBlur(f, (0, 0), sigma))
    assert cam.raised and cam.raised[0][1] in ("blur", "blur_distribution"), cam.raised
    # the range rule's frames in a row; sigma 2 on the street, whose sharpness varies by more than that
    # from shot to shot, only the distribution test sees, once its 100-frame window has moved enough
    assert cam.raised[0][0] - AT <= (100 if (source, sigma) == ("street", 2.0) else CONSECUTIVE - 1), cam.raised
    assert {signal for _, signal in cam.raised} <= {"blur", "blur_distribution"}, cam.raised


@pytest.mark.parametrize("source", ["street", "still"])
def test_a_slow_dusk_is_one_cause_brightness(street_frames, source):
    """Light falling to 0.6 over 40 s (200 frames at 5 frames/s), then staying: brightness is the signal
    named (by the distribution test or the range rule, whichever sees it first), once each;
    contrast, which fell by the same factor, blur and saturation are not. On the street camera, whose
    brightness varies by more than that from shot to shot, nothing is raised."""
    frames = street_frames if source == "street" else still("astronaut", 640)
    cam = Camera()
    for i in range(800):
        gain = 1.0 - 0.4 * min(max(i - 300, 0), 200) / 200
        cam.send(image.measure(jpeg(back_and_forth(frames, i), 75, gain)))
    signals = [signal for _, signal in cam.raised]
    if source == "still":
        assert signals and signals[0] in ("brightness", "brightness_distribution"), cam.raised
    assert sorted(set(signals)) == sorted(signals), cam.raised  # each at most once: no flapping
    assert set(signals) <= {"brightness", "brightness_distribution"}, cam.raised
