"""GPU check of the GPU frame path and of TensorRT, on real footage: what load-tests/gpu_check.sh runs on a
machine with a GPU. Nothing here has passed on a GPU yet; this is the check that would say so.

    python load-tests/gpu_check.py [--video bigbuckbunny.mp4] [--frames 16] [--decoder auto]

1. **Frame backend**: the same JPEG frames (Big Buck Bunny, 1280x720, quality 80) through the CPU backend
   (:class:`streams.frames.CpuFrames`, full size) and the GPU one (:class:`streams.gpu_frames.GpuFrames` with
   CuPy; decoded by nvImageCodec, or by torchvision's nvJPEG decode when nvImageCodec is not installed, said so).
   Passes when, for every frame, the signals agree within the tolerances of tests/streams/test_gpu_frames.py
   (brightness, contrast, saturation 0.05 of 255; blur 1%; exposure shares 0.002; the grey copy 1 level), the
   model's input within 0.05, the detections (NanoDet-m on ONNX Runtime, both inputs) matched at IoU 0.5 for
   95% or more with scores within 0.05, and bad frames get the CPU path's dead-letter reasons. The time per
   frame of each (decode, signals, thumbnail, model input; one thread, warm) is reported, not judged.
2. **TensorRT**: where ONNX Runtime offers the TensorRT provider, NanoDet-m opened twice, each time in a fresh
   process, with the options the worker gives it (:mod:`models.providers`: FP16, an engine cache folder, a
   profile for batches 1 to 8). Passes when both sessions really run on TensorRT, the second starts faster
   and builds nothing new (the cache folder's files unchanged), and its detections on the frames match the
   CPU provider's at IoU 0.5 (90% or more: FP16), scores within 0.1. Where the provider is missing the
   section says why and the check does not pass.

Prints a table, then one JSON line (``ok``: every section ran and passed); writes it to ``$OUT/gpu-check.json``
when ``$OUT`` is set.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.contracts import ContractError, FrameHeader, pack_frame  # noqa: E402
from core.settings import Settings  # noqa: E402
from models.nanodet import NanoDet  # noqa: E402
from models.providers import TENSORRT  # noqa: E402
from streams.frames import CpuFrames  # noqa: E402
from streams.gpu_frames import GpuFrames  # noqa: E402

TOLERANCE = {"brightness": 0.05, "contrast": 0.05, "saturation": 0.05, "under_exposed": 0.002, "over_exposed": 0.002}
BLUR_RELATIVE = 0.01


def footage(video: str, count: int) -> list[bytes]:
    cap = cv2.VideoCapture(video)
    frames = []
    while len(frames) < count * 6:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    if not frames:
        raise SystemExit(f"no frames in {video}")
    return [value(img) for img in frames[::6][:count]]


def value(img: np.ndarray, data: bytes | None = None) -> bytes:
    h = FrameHeader(
        frame_id="cam-1:1:0", camera_id="cam-1", seq=0, captured_at=time.time(), width=img.shape[1],
        height=img.shape[0],
    )  # fmt: skip
    return pack_frame(
        h, data if data is not None else cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()
    )


def host_rgb(data: bytes):
    """OpenCV's decode as RGB: the stand-in for nvImageCodec with ``--decoder host``."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def gpu_decoder(kind: str):
    """(name, bytes -> RGB CuPy array or None): nvImageCodec, else torchvision's nvJPEG."""
    import cupy

    if kind in ("auto", "nvimgcodec"):
        try:
            from nvidia import nvimgcodec

            decoder = nvimgcodec.Decoder()
            params = nvimgcodec.DecodeParams(apply_exif_orientation=False, color_spec=nvimgcodec.ColorSpec.RGB)
            return f"nvimgcodec {getattr(nvimgcodec, '__version__', '?')}", lambda d: decoder.decode(d, params=params)
        except ImportError:
            if kind == "nvimgcodec":
                raise
    import torch
    import torchvision
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(data: bytes):
        t = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB, device="cuda")
        return cupy.from_dlpack(t.permute(1, 2, 0).contiguous())

    return f"torchvision {torchvision.__version__} nvJPEG (nvImageCodec not installed)", decode


def compare_frames(cpu: CpuFrames, gpu: GpuFrames, values: list[bytes], detector) -> dict:
    """The two backends on the same frames: the largest differences, and the detections matched."""
    worst = dict.fromkeys([*TOLERANCE, "blur_relative", "small", "model_input"], 0.0)
    batch = detector.new_batch(2 * len(values))
    sizes = []
    for i, v in enumerate(values):
        a, b = cpu.decode(v), gpu.decode(v)
        sa, sb = cpu.measure(a), gpu.measure(b)
        for name in TOLERANCE:
            worst[name] = max(worst[name], abs(getattr(sa, name) - getattr(sb, name)))
        worst["blur_relative"] = max(worst["blur_relative"], abs(sa.blur - sb.blur) / max(sa.blur, 1e-9))
        worst["small"] = max(worst["small"], float(np.abs(sa.small.astype(int) - sb.small).max()))
        cpu.preprocess_into(a, batch[2 * i])
        gpu.preprocess_into(b, batch[2 * i + 1])
        worst["model_input"] = max(worst["model_input"], float(np.abs(batch[2 * i] - batch[2 * i + 1]).max()))
        sizes += [a.size, a.size]
    found = detector.postprocess(detector.infer(batch), sizes)
    total, pairs, score = matched_share(found[0::2], found[1::2])
    ok = all(worst[k] <= t for k, t in TOLERANCE.items()) and worst["blur_relative"] <= BLUR_RELATIVE
    ok = ok and worst["small"] <= 1 and worst["model_input"] <= 0.05 and pairs >= 0.95 * total and score <= 0.05
    return {"ok": bool(ok and total > 0), "worst": {k: round(v, 5) for k, v in worst.items()},
            "detections": total, "matched": pairs, "max_score_diff": round(score, 4)}  # fmt: skip


def matched_share(left: list[list], right: list[list]) -> tuple[int, int, float]:
    """Detections (the larger side's count), pairs of one label at IoU >= 0.5, the largest score difference."""
    total = pairs = 0
    worst = 0.0
    for a, b in zip(left, right, strict=True):
        total += max(len(a), len(b))
        cands = sorted(((iou(x.box, y.box), i, j) for i, x in enumerate(a) for j, y in enumerate(b)
                        if x.label == y.label), reverse=True)  # fmt: skip
        used_a, used_b = set(), set()
        for overlap, i, j in cands:
            if overlap >= 0.5 and i not in used_a and j not in used_b:
                used_a.add(i), used_b.add(j)
                pairs += 1
                worst = max(worst, abs(a[i].score - b[j].score))
    return total, pairs, worst


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def reasons(cpu: CpuFrames, gpu: GpuFrames, good: bytes) -> dict:
    """Bad frames through both backends: the same dead-letter reason each."""
    from core.contracts import unpack_frame

    frame = unpack_frame(good)
    img = np.zeros((frame.header.height, frame.header.width, 3), np.uint8)
    data = frame.image
    bad = [value(img, data[: len(data) // 3]), value(img, b"\xff\xd8\xff" + b"\x00" * 40), value(img, b"\x00" * 500)]
    got = []
    for v in bad:
        pair = []
        for backend in (cpu, gpu):
            try:
                backend.decode(v)
                pair.append("ok")
            except ContractError as exc:
                pair.append(exc.reason)
        got.append(pair)
    return {"ok": all(a == b for a, b in got), "reasons": got}


def per_frame_ms(backend, values: list[bytes], detector, rounds: int = 3) -> float:
    slot = detector.new_batch(1)[0]
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for v in values:
            d = backend.decode(v)
            backend.measure(d)
            backend.thumbnail(d, 320)
            backend.preprocess_into(d, slot)
        best = min(best, (time.perf_counter() - t0) * 1e3 / len(values))
    return round(best, 3)


TRT_RUN = r"""
import json, sys, time, numpy as np, onnxruntime as ort
sys.path.insert(0, sys.argv[1])
from models.providers import GpuOptions, with_options, TENSORRT, CUDA
opts = GpuOptions(trt_fp16=True, trt_engine_cache=sys.argv[2], max_batch=8)
t0 = time.perf_counter()
asked = with_options([TENSORRT, CUDA, "CPUExecutionProvider"], opts, "images", ["N", 3, 416, 416])
s = ort.InferenceSession(sys.argv[3], providers=asked)
opened = time.perf_counter() - t0
x = np.load(sys.argv[4])
t0 = time.perf_counter()
out = s.run(None, {"images": x})
first_run = time.perf_counter() - t0
np.savez(sys.argv[5], *out)
print(json.dumps({"providers": s.get_providers(), "open_s": round(opened, 2), "first_run_s": round(first_run, 2)}))
"""


def tensorrt(values: list[bytes], detector: NanoDet) -> dict:
    """NanoDet-m on TensorRT (FP16, engine cache), twice in fresh processes, against the CPU provider."""
    import onnxruntime as ort

    if TENSORRT not in ort.get_available_providers():
        why = f"onnxruntime {ort.__version__} offers no TensorRT provider here ({ort.get_available_providers()})"
        return {"ok": False, "skipped": f"{why}: install cvops[gpu] and TensorRT's libraries (tensorrt-cu13)"}
    cpu = CpuFrames(Settings(_env_file=None), detector, (0, 0))
    decoded = [cpu.decode(v) for v in values[:8]]
    batch = detector.new_batch(len(decoded))
    for d, slot in zip(decoded, batch, strict=True):
        cpu.preprocess_into(d, slot)
    work = Path(tempfile.mkdtemp(prefix="cvops-trt-"))
    cache = work / "engines"
    np.save(work / "x.npy", batch)
    runs = []
    for k in (1, 2):
        before = sorted(p.name for p in cache.glob("*")) if cache.exists() else []
        done = subprocess.run(
            [sys.executable, "-c", TRT_RUN, str(ROOT), str(cache), str(detector_path()), str(work / "x.npy"),
             str(work / f"out{k}.npz")], capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        if done.returncode != 0:
            return {"ok": False, "failed": done.stderr[-2000:], "runs": runs}
        run = json.loads(done.stdout.strip().splitlines()[-1])
        run["cache_files_before"] = len(before)
        run["cache_changed"] = sorted(p.name for p in cache.glob("*")) != before
        runs.append(run)
    with np.load(work / "out2.npz") as z:
        trt_out = [z[f"arr_{i}"] for i in range(len(z.files))]
    sizes = [d.size for d in decoded]
    total, pairs, score = matched_share(
        detector.postprocess(detector.infer(batch), sizes), _trt(detector, trt_out, sizes)
    )
    ok = all(r["providers"][0] == TENSORRT for r in runs) and not runs[1]["cache_changed"]
    ok = ok and runs[1]["open_s"] < runs[0]["open_s"] and pairs >= 0.9 * total and score <= 0.1
    return {"ok": bool(ok), "runs": runs, "detections": total, "matched": pairs, "max_score_diff": round(score, 4)}


def _trt(detector: NanoDet, outputs: list, sizes) -> list:
    """The session's outputs (all of them, in the graph's order) in NanoDet's post-processing order."""
    import onnxruntime as ort

    names = [
        o.name for o in ort.InferenceSession(str(detector_path()), providers=["CPUExecutionProvider"]).get_outputs()
    ]
    by_name = dict(zip(names, outputs, strict=True))
    return detector.postprocess([by_name[n] for n in detector.run_outputs], sizes)


def detector_path() -> Path:
    return ROOT / "models" / "zoo" / "nanodet-m" / "nanodet-m.onnx"


def gpu_info() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.strip() or "none"  # fmt: skip
    except OSError:
        return "no nvidia-smi"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--video", default=str(ROOT / ".whl" / "bigbuckbunny.mp4"), help="1280x720 footage")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument(
        "--decoder", default="auto", choices=("auto", "nvimgcodec", "torchvision", "host"),
        help="host: the GPU backend's code with numpy and OpenCV, to try this script on a machine without a GPU",
    )  # fmt: skip
    args = ap.parse_args()
    values = footage(args.video, args.frames)
    settings = Settings(_env_file=None)
    detector = NanoDet(providers=["CPUExecutionProvider"], intra_op_threads=4)
    if args.decoder == "host":
        xp, version, name = np, "none (numpy)", "OpenCV on the host: NOT a GPU run"
        decode_rgb = host_rgb
    else:
        import cupy as xp

        version = xp.__version__
        name, decode_rgb = gpu_decoder(args.decoder)
    cpu = CpuFrames(settings, detector, (0, 0))
    gpu = GpuFrames(settings, detector, (0, 0), xp=xp, decode_rgb=decode_rgb)
    result = {"benchmark": "gpu_check", "gpu": gpu_info(), "cupy": version, "decoder": name}
    result["frames"] = compare_frames(cpu, gpu, values, detector)
    result["bad_frames"] = reasons(cpu, gpu, values[0])
    result["ms_per_frame"] = {"cpu": per_frame_ms(cpu, values, detector), "gpu": per_frame_ms(gpu, values, detector)}
    result["tensorrt"] = tensorrt(values, detector)
    result["ok"] = args.decoder != "host" and all(result[k]["ok"] for k in ("frames", "bad_frames", "tensorrt"))
    for key in ("decoder", "frames", "bad_frames", "ms_per_frame", "tensorrt"):
        print(f"{key:14s} {json.dumps(result[key])[:400]}")
    line = json.dumps(result)
    print(line)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu-check.json").write_text(line + "\n")


if __name__ == "__main__":
    main()
