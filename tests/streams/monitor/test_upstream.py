from __future__ import annotations

import pytest

from streams.monitor.upstream import ASPECT_RATIO, BYTES_PER_PIXEL, ENCODING, FRAME_RATE, RESOLUTION, UpstreamDrift

from .conftest import through_json

T0 = 1_700_000_000.0


class Camera:
    """A fake camera: a format that can be changed, frames at a rate."""

    def __init__(self, d: UpstreamDrift, fps: float = 5.0):
        self.d, self.t, self.fps = d, T0, fps
        self.width, self.height, self.encoding, self.bpp = 1920, 1080, "jpeg", 0.1

    def send(self, n: int) -> UpstreamDrift:
        for _ in range(n):
            nbytes = int(self.bpp * self.width * self.height)
            self.d.update(self.width, self.height, self.encoding, captured_at=self.t, nbytes=nbytes)
            self.t += 1 / self.fps
        return self.d


def test_the_reference_is_learned_from_the_first_frames():
    d = Camera(UpstreamDrift(reference=20)).send(20)
    assert d.ready and d.ref_resolution == (1920, 1080) and d.ref_encoding == "jpeg"
    assert d.reference_fps == pytest.approx(5.0)
    assert d.ref_bpp == pytest.approx(0.1, rel=1e-3)


def test_a_steady_camera_does_not_drift():
    assert not Camera(UpstreamDrift()).send(500).drift_detected


def test_same_aspect_new_resolution_is_resolution_only_and_clears_when_back():
    cam = Camera(UpstreamDrift(reference=20, consecutive=3))
    cam.send(30)
    cam.width, cam.height = 1280, 720
    assert not cam.send(2).drift_detected
    assert cam.send(1).drifted == {RESOLUTION}
    cam.width, cam.height = 1920, 1080
    assert not cam.send(1).drift_detected


def test_a_new_aspect_ratio_is_both():
    cam = Camera(UpstreamDrift(reference=20, consecutive=1))
    cam.send(20)
    cam.width, cam.height = 1440, 1080
    assert cam.send(1).drifted == {RESOLUTION, ASPECT_RATIO}


def test_a_new_encoding_is_flagged():
    cam = Camera(UpstreamDrift(reference=20, consecutive=2))
    cam.send(20)
    cam.encoding = "webp"
    assert cam.send(2).drifted == {ENCODING}


@pytest.mark.parametrize("new_fps", [2.0, 10.0])
def test_a_new_frame_rate_either_way_is_flagged_over_the_window(new_fps):
    cam = Camera(UpstreamDrift(reference=20, window=10, rate_tolerance=0.2))
    cam.send(30)
    cam.fps = new_fps
    assert FRAME_RATE not in cam.send(4).drifted  # most of the window still at 5 fps
    assert FRAME_RATE in cam.send(6).drifted
    assert cam.d.frame_rate == pytest.approx(new_fps)


def test_much_heavier_compression_is_flagged_and_a_mild_change_is_not():
    cam = Camera(UpstreamDrift(reference=20, window=10, bpp_factor=2.5))
    cam.send(20)
    cam.bpp = 0.06
    assert BYTES_PER_PIXEL not in cam.send(10).drifted
    cam.bpp = 0.02
    assert BYTES_PER_PIXEL in cam.send(10).drifted


def test_state_survives_a_json_round_trip_and_stays_bounded():
    a = Camera(UpstreamDrift(reference=20, window=10))
    a.send(1000)
    b = Camera(UpstreamDrift.from_dict(through_json(a.d.to_dict())))
    b.t = a.t
    assert len(b.d.intervals) == 20 and len(b.d.bpps) == 20
    for cam in (a, b):
        cam.width, cam.height, cam.fps = 1280, 720, 2.0
        cam.send(15)
    assert a.d.drifted == b.d.drifted == {RESOLUTION, FRAME_RATE}
    assert a.d.to_dict() == b.d.to_dict()
