"""The worker's processing path without a broker: how close it comes to the model's own ceiling.

    ./dev bench processor [--quick]
    python load-tests/processor.py --providers CUDAExecutionProvider,CPUExecutionProvider --batches 8,32

For each batch size, in one run on one machine, with the same detector session:

- ``bare_fps``: ``detector.infer`` alone on a pre-processed batch (the model's ceiling here);
- ``processor_fps``: camera frames (JPEG in the frame envelope, as a gateway sends them) through
  :class:`streams.process.FrameProcessor` as the worker drives it: ``prepare`` (decode in
  ``decode_threads`` threads, pre-process) for batch k+1 in one thread, and its inference started
  (``start_inference``) before ``finish`` (post-process, image signals, the camera monitors) runs batch k
  in another;
- ``efficiency`` = processor_fps / bare_fps, and the mean per-frame milliseconds of each stage, so the
  stage that bounds throughput is named.

No Kafka: this isolates the worker's own overhead from the broker's (``./dev bench inference`` measures
the whole path). It needs only numpy, opencv, onnxruntime and pydantic, so it also runs on a GPU machine
that has none of the streaming dependencies. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.contracts import FrameHeader, pack_frame, unpack_frame
from core.settings import Settings
from models import load_detector
from streams.process import FrameProcessor, RawMessage


def footage(path: str | None) -> str:
    if path:
        return path
    from streams.gateway import default_footage  # needs the streaming extras; pass --video without them

    return str(default_footage())


def camera_messages(video: str, cameras: int, size: tuple[int, int], count: int, quality: int) -> list[RawMessage]:
    """``count`` frame messages from ``cameras`` cameras, round-robin, each camera a different stretch of
    the footage resized to ``size`` (width, height) and JPEG-encoded as a gateway would."""
    cap = cv2.VideoCapture(video)
    frames = []
    while len(frames) < 250:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    if not frames:
        raise SystemExit(f"no frames could be read from {video}")
    per_camera = -(-count // cameras)
    encoded: dict[int, bytes] = {}
    msgs = []
    now = time.time()
    for i in range(count):
        cam, seq = i % cameras, i // cameras
        k = (cam * 31 + seq) % len(frames)
        if k not in encoded:
            img = cv2.resize(frames[k], size, interpolation=cv2.INTER_LINEAR)
            encoded[k] = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()
        camera_id = f"cam-{cam}"
        header = FrameHeader(
            frame_id=f"{camera_id}:bench:{seq}",
            camera_id=camera_id,
            seq=seq,
            captured_at=now - (per_camera - seq) / 25,
            width=size[0],
            height=size[1],
        )
        msgs.append(RawMessage("frames", cam, seq, camera_id.encode(), pack_frame(header, encoded[k]), now))
    return msgs


def bare(detector, images: list[np.ndarray], batch: int, seconds: float) -> float:
    x = detector.preprocess(images[:batch])
    for _ in range(3):
        detector.infer(x)  # warm-up (and, on a GPU, kernel selection)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or done < 5 * batch:
        detector.infer(x)
        done += batch
    return done / (time.perf_counter() - start)


def through_processor(processor: FrameProcessor, msgs: list[RawMessage], batch: int, seconds: float) -> dict:
    """The worker's loop: prepare batch k+1 while batch k is inferred, and start inferring batch k+1 before
    batch k is post-processed and judged. Frames are replayed from ``msgs`` with fresh sequence numbers so
    the camera monitors see a moving stream."""
    prepare_pool = ThreadPoolExecutor(1, thread_name_prefix="prepare")
    infer_pool = ThreadPoolExecutor(1, thread_name_prefix="infer")
    states: dict[str, dict | None] = {}
    stages = {"decode_ms": 0.0, "preprocess_ms": 0.0, "inference_ms": 0.0, "postprocess_ms": 0.0}
    batches = [msgs[i : i + batch] for i in range(0, len(msgs) - batch + 1, batch)]
    # Warm-up: the monitors learn their reference windows outside the timed part.
    for b in batches[:2]:
        processor.finish(processor.prepare(b), states)
    done = dead = 0
    finish_s = 0.0

    def finish(prepared, inferring) -> None:
        nonlocal done, dead, finish_s
        inferred = inferring.result() if inferring is not None else None
        t0 = time.perf_counter()
        result = infer_pool.submit(processor.finish, prepared, states, inferred).result()
        finish_s += time.perf_counter() - t0
        for camera_id in result.essential:
            states[camera_id] = result.states[camera_id]
        done += len(result.predictions)
        dead += len(result.dead_letters)
        for p in result.predictions:
            for name in stages:
                stages[name] += getattr(p.timings, name)

    start = time.perf_counter()
    k = 0
    pending = prepare_pool.submit(processor.prepare, batches[0])
    inferring = None  # the batch before, on the lanes
    while True:
        prepared = pending.result()
        k += 1
        timed_out = time.perf_counter() - start >= seconds and done >= 5 * batch
        if not timed_out:
            pending = prepare_pool.submit(processor.prepare, batches[k % len(batches)])
        started = (prepared, processor.start_inference(prepared))
        if inferring is not None:
            finish(*inferring)
        inferring = started
        if timed_out:
            finish(*inferring)
            break
    elapsed = time.perf_counter() - start
    prepare_pool.shutdown()
    infer_pool.shutdown()
    per_frame = {name: round(total / max(done, 1), 3) for name, total in stages.items()}
    # finish() here = post-process + signals + monitors (inference ran before); the rest is the monitoring's.
    per_frame["finish_ms"] = round(finish_s * 1e3 / max(done, 1), 3)
    per_frame["monitor_ms"] = round(per_frame["finish_ms"] - per_frame["postprocess_ms"], 3)
    return {"fps": done / elapsed, "frames": done, "dead_letters": dead, **per_frame}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="batches 1 and 8, 3 s each")
    ap.add_argument("--providers", default=None, help="ONNX Runtime providers (default: CVOPS_PROVIDERS)")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=8.0, help="timed seconds per configuration")
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--size", default="1280x720", help="frame size the cameras send, WxH")
    ap.add_argument("--quality", type=int, default=80, help="JPEG quality")
    ap.add_argument("--decode-threads", type=int, default=None, help="default: CVOPS_DECODE_THREADS")
    ap.add_argument("--video", default=None, help="footage to cut frames from (default: bikes.mp4)")
    ap.add_argument("--embedding", action="store_true", help="also run the embedding model on sampled frames")
    ap.add_argument(
        "--start-at",
        type=float,
        default=0.0,
        help="unix time to start measuring at, so that several processes "
        "(workers sharing one GPU) measure over the same seconds",
    )
    args = ap.parse_args()
    if args.quick:
        args.batches, args.seconds = "1,8", 3.0

    env = {"embedding_model": ""} if not args.embedding else {}
    if args.providers:
        env["providers"] = args.providers
    if args.decode_threads is not None:
        env["decode_threads"] = args.decode_threads
    settings = Settings(**env)
    w, h = (int(v) for v in args.size.lower().split("x"))
    batches = [int(b) for b in args.batches.split(",")]

    detector = load_detector(
        settings.model,
        extra_dirs=settings.model_dirs,
        providers=settings.providers,
        intra_op_threads=settings.intra_op_threads or None,
    )
    providers = list(detector.providers)
    embedder = None
    if args.embedding:
        from models import load

        embedder = load(settings.embedding_model, providers=settings.providers)
    msgs = camera_messages(footage(args.video), args.cameras, (w, h), max(batches) * 24, args.quality)
    images = [cv2.imdecode(np.frombuffer(unpack_frame(m.value).image, np.uint8), cv2.IMREAD_COLOR) for m in msgs]
    print(
        f"{detector.name}@{detector.version} on {','.join(providers)}; {args.cameras} cameras at {w}x{h}; "
        f"{settings.decode_workers} decode threads; {os.cpu_count()} cores",
        file=sys.stderr,
    )

    if args.start_at:
        time.sleep(max(0.0, args.start_at - time.time()))
    rows = []
    for b in batches:
        processor = FrameProcessor(settings, detector, decode_threads=settings.decode_workers, embedder=embedder)
        try:
            bare_fps = bare(detector, images, b, args.seconds)
            run = through_processor(processor, msgs, b, args.seconds)
        finally:
            processor.close()
        rows.append(
            {
                "batch": b,
                "bare_fps": round(bare_fps, 1),
                **{k: (round(v, 1) if k == "fps" else v) for k, v in run.items()},
            }
        )
        rows[-1]["efficiency"] = round(run["fps"] / bare_fps, 3)
        print(f"  b{b}: bare {bare_fps:.1f} fps, processor {run['fps']:.1f} fps", file=sys.stderr)

    cols = ["batch", "bare_fps", "fps", "efficiency", "decode_ms", "preprocess_ms", "inference_ms", "monitor_ms"]
    print()
    print("".join(f"{c:>14}" for c in cols))
    for r in rows:
        print("".join(f"{r[c]:>14}" for c in cols))
    print(
        "(fps = processor_fps; stage columns are mean ms per frame: decode and pre-process run in the prepare "
        "stage, in parallel with inference and monitoring in the finish stage)"
    )
    best = max(rows, key=lambda r: r["fps"])
    print(
        json.dumps(
            {
                "benchmark": "processor",
                "model": f"{detector.name}@{detector.version}",
                "providers": providers,
                "cores": os.cpu_count(),
                "decode_threads": settings.decode_workers,
                "cameras": args.cameras,
                "frame_size": f"{w}x{h}",
                "embedding": bool(embedder),
                "processor_fps": best["fps"],
                "bare_fps": best["bare_fps"],
                "efficiency": best["efficiency"],
                "rows": rows,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
