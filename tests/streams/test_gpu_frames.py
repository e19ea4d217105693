"""The GPU frame backend's logic, run on the CPU: the same code with numpy in place of CuPy and OpenCV's decoder
in place of nvImageCodec, against the CPU backend on real footage. What only a GPU can show (nvImageCodec,
CuPy's kernels, speed) is load-tests/gpu_check.sh's.

Tolerances: resampling within 1 grey level of OpenCV's (float matrices against OpenCV's fixed point); signals
within 0.05 of 255 (brightness, contrast, saturation), blur within 1%, exposure shares within 0.002; the
model's input within 0.05 after normalisation (about 3 grey levels); detections matched at IoU 0.5 for 95%,
scores within 0.05.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from core.contracts import ContractError, FrameHeader, pack_frame
from core.settings import Settings
from models import load_detector
from streams import gpu_frames as g
from streams.frames import CpuFrames, choose
from streams.gateway import default_footage
from streams.monitor import image as image_signals
from streams.process import FrameProcessor, RawMessage
from tests.streams.test_decode import with_orientation
from tests.streams.test_reduced_decode import matched


def opencv_rgb(data: bytes):
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def detector():
    return load_detector("nanodet-m", intra_op_threads=2)


@pytest.fixture(scope="module")
def bunny() -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(default_footage().with_name("bigbuckbunny.mp4")))
    frames = []
    for _ in range(60):
        ok, img = cap.read()
        assert ok
        frames.append(img)
    return frames[::6]


def value(img: np.ndarray, data: bytes | None = None, size: tuple[int, int] | None = None) -> bytes:
    w, h = size or (img.shape[1], img.shape[0])
    header = FrameHeader(frame_id="c:1:0", camera_id="c", seq=0, captured_at=1.7e9, width=w, height=h)
    return pack_frame(header, data if data is not None else cv2.imencode(".jpg", img)[1].tobytes())


def test_resampling_and_grey_reproduce_opencv(street_frames, bunny):
    for img in (street_frames[5], bunny[3]):
        assert np.array_equal(g.grey(np, img), cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
        grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        area = np.rint(g.resample(np, grey, (320, 136), g.area_weights))
        assert np.abs(area - cv2.resize(grey, (320, 136), interpolation=cv2.INTER_AREA)).max() <= 1
        for size in ((416, 416), (320, 180), (1000, 700)):
            linear = np.rint(g.resample(np, img, size, g.linear_weights))
            assert np.abs(linear - cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)).max() <= 1


def test_signals_on_the_array_path_agree_with_the_cpu_path(street_frames, bunny):
    for img in [*street_frames[::8], *bunny]:
        cpu = image_signals.measure(img)
        arr = g.measure(np, img, (img.shape[1], img.shape[0]))
        assert (arr.width, arr.height, arr.aspect_ratio) == (cpu.width, cpu.height, cpu.aspect_ratio)
        for name in ("brightness", "contrast", "saturation"):
            assert abs(getattr(arr, name) - getattr(cpu, name)) <= 0.05, name
        assert abs(arr.blur - cpu.blur) <= 0.01 * cpu.blur
        assert abs(arr.under_exposed - cpu.under_exposed) <= 0.002
        assert abs(arr.over_exposed - cpu.over_exposed) <= 0.002
        assert arr.black == cpu.black and arr.small.shape == cpu.small.shape
        assert np.abs(arr.small.astype(int) - cpu.small).max() <= 1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_backend_turns_and_checks_frames_as_the_cpu_path_does(street_frames, detector, orientation):
    settings = Settings(_env_file=None)
    gpu = g.GpuFrames(settings, detector, (0, 0), xp=np, decode_rgb=opencv_rgb)
    cpu = CpuFrames(settings, detector, (0, 0))
    data = with_orientation(street_frames[0], orientation)
    size = (272, 640) if orientation >= 5 else (640, 272)
    a, b = gpu.decode(value(street_frames[0], data, size)), cpu.decode(value(street_frames[0], data, size))
    assert np.array_equal(a.image, b.image) and a.size == b.size
    if orientation >= 5:
        with pytest.raises(ContractError) as err:
            gpu.decode(value(street_frames[0], data, size[::-1]))
        assert err.value.reason == "size_mismatch"


def test_bad_frames_get_the_cpu_paths_reasons(street_frames, detector):
    settings = Settings(_env_file=None, max_pixels=100_000)
    gpu = g.GpuFrames(settings, detector, (0, 0), xp=np, decode_rgb=opencv_rgb)
    cpu = CpuFrames(settings, detector, (0, 0))
    img = street_frames[0][:200, :300]
    data = cv2.imencode(".jpg", img)[1].tobytes()
    bad = [
        value(img, data[: len(data) // 3]), value(img, b"\xff\xd8\xff" + b"\x00" * 40), value(img, data, (600, 200)),
        value(street_frames[0]), b"not a frame",
    ]  # fmt: skip
    for v in bad:
        reasons = []
        for backend in (gpu, cpu):
            try:
                backend.decode(v)
                reasons.append("ok")
            except ContractError as exc:
                reasons.append(exc.reason)
        assert reasons[0] == reasons[1], reasons
    assert reasons[0] != "ok"


def test_thumbnails_and_the_model_input_match_the_cpu_path(bunny, detector):
    settings = Settings(_env_file=None)
    gpu = g.GpuFrames(settings, detector, (0, 0), xp=np, decode_rgb=opencv_rgb)
    cpu = CpuFrames(settings, detector, (0, 0))
    decoded = cpu.decode(value(bunny[2]))
    jpg_a, size_a = gpu.thumbnail(decoded, 320)
    jpg_b, size_b = cpu.thumbnail(decoded, 320)
    assert size_a == size_b == (320, 180)
    a, b = (cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR).astype(int) for j in (jpg_a, jpg_b))
    assert np.abs(a - b).mean() < 1.5
    slots = detector.new_batch(2)
    gpu.preprocess_into(decoded, slots[0])
    cpu.preprocess_into(decoded, slots[1])
    assert np.abs(slots[0] - slots[1]).max() < 0.05


def messages(frames: list[np.ndarray]) -> list[RawMessage]:
    out = []
    for seq, img in enumerate(frames):
        h = FrameHeader(
            frame_id=f"c:1:{seq}", camera_id="c", seq=seq, captured_at=time.time(), width=img.shape[1],
            height=img.shape[0],
        )  # fmt: skip
        out.append(RawMessage("frames", 0, seq, b"c", pack_frame(h, cv2.imencode(".jpg", img)[1].tobytes())))
    return out


def test_the_processor_on_the_backend_gives_the_cpu_paths_detections_and_metrics(bunny, detector):
    settings = Settings(_env_file=None, decode_reduced=False)
    msgs = messages(bunny)
    results = []
    for frames in (g.GpuFrames(settings, detector, (0, 0), xp=np, decode_rgb=opencv_rgb), None):
        p = FrameProcessor(settings, detector, frames=frames)
        results.append(p.process(msgs, {}))
        p.close()
    on_gpu_code, on_cpu = results
    total = pairs = 0
    for a, b in zip(on_gpu_code.predictions, on_cpu.predictions, strict=True):
        found = matched(a.detections, b.detections)
        total, pairs = total + max(len(a.detections), len(b.detections)), pairs + len(found)
        assert all(abs(x.score - y.score) <= 0.05 for x, y in found)
    assert total > 10 and pairs >= 0.95 * total
    for a, b in zip(on_gpu_code.metrics, on_cpu.metrics, strict=True):
        assert abs(a.brightness - b.brightness) <= 0.05 and abs(a.blur - b.blur) <= 0.01 * b.blur


def test_the_gpu_backend_is_chosen_only_when_asked_and_able():
    assert choose("cpu", lambda: pytest.fail("not asked"))[0] == "cpu"
    assert choose("gpu", lambda: "no CUDA device is present") == ("cpu", "gpu asked for, but no CUDA device is present")
    assert g.missing() is not None  # this machine: no nvImageCodec, or no device
    p = FrameProcessor(Settings(_env_file=None, frame_backend="gpu"), load_detector("nanodet-m", intra_op_threads=1))
    assert p.frames.name.startswith("cpu: ")
    p.close()
