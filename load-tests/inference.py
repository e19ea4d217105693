"""Inference benchmark: how close the whole pipeline runs to the model's own limit on this machine.

    ./dev bench inference [--quick] [--cameras 4] [--batch 8] [--threads 0]

One run, same machine, same model, same thread settings:

- ``bare_fps_b1``, ``bare_fps_bN``: ONNX Runtime alone on pre-decoded tensors (the ceiling); batch 1 on
  one session of ``--threads`` threads, batch N the better of that and the worker's ``--lanes``
  (``models.session.Lanes``), also given apart as ``bare_fps_bN_one_session``;
- ``naive_fps``: a plain consumer that decodes, infers and publishes one frame at a time, on one session of
  ``--threads`` threads (what a user writes first);
- ``pipeline_fps``: gateway -> broker -> ``cvops worker`` -> predictions topic, N cameras, from a backlog;
  the worker monitors as well (metrics, monitors, thumbnails) unless ``--no-monitoring``, which gives it
  the naive consumer's work;
- ``p50_ms``/``p95_ms``/``p99_ms``: capture to prediction received, at an offered load of 60% of
  ``pipeline_fps``;
- ``efficiency`` = pipeline_fps / bare_fps_bN; ``broker_cpu_s`` and ``worker_cpu_s`` during the
  pipeline phase, since the broker shares the cores with the worker here.

Prints a table, then one JSON line. Only 127.0.0.1 is used: the broker is started by this script.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import children_cpu, free_port, percentile, start_worker

from models import load_detector
from streams import fetch_pacing
from streams.config import Settings
from streams.contracts import (
    Detection,
    Prediction,
    Timings,
    decode_record,
    encode_record,
    unpack_frame,
)
from streams.gateway import fixed_cameras, publish
from streams.localbroker import EmbeddedBroker
from streams.topics import create_topics


def bare(detector, batch: int, seconds: float, sizes=None) -> dict[int, float]:
    cams = fixed_cameras(None, 4, 80)
    images = [cv2.imdecode(np.frombuffer(next(cams[i % 4]).data, np.uint8), cv2.IMREAD_COLOR) for i in range(batch)]
    out = {}
    for n in sizes or (1, batch):
        x = detector.preprocess(images[:n])
        detector.infer(x)  # warm-up
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            detector.infer(x)
            done += n
        out[n] = done / (time.perf_counter() - start)
    return out


async def naive(settings: Settings, detector, frames: int) -> float:
    """What a user writes first: one frame at a time, decode, infer, publish, next."""
    consumer = AIOKafkaConsumer(
        settings.topic("frames"),
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"naive-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    await producer.start()
    done, start = 0, None
    try:
        async for msg in consumer:
            if start is None:
                start = time.perf_counter()
            frame = unpack_frame(msg.value)
            image = cv2.imdecode(np.frombuffer(frame.image, np.uint8), cv2.IMREAD_COLOR)
            t0 = time.perf_counter()
            dets = detector.detect([image])[0]
            ms = (time.perf_counter() - t0) * 1e3
            h = frame.header
            p = Prediction(
                frame_id=h.frame_id, camera_id=h.camera_id, seq=h.seq, captured_at=h.captured_at,
                processed_at=time.time(), model_name=detector.name, model_version=detector.version,
                width=h.width, height=h.height, batch_size=1,
                detections=[Detection(label=d.label, class_id=d.class_id, score=d.score, box=d.box) for d in dets],
                timings=Timings(queue_ms=0, decode_ms=0, preprocess_ms=0, inference_ms=ms, postprocess_ms=0),
            )  # fmt: skip
            await producer.send_and_wait(settings.topic("predictions"), encode_record(p), key=msg.key)
            done += 1
            if done >= frames:
                break
    finally:
        await consumer.stop()
        await producer.stop()
    return (done - 1) / (time.perf_counter() - start)


async def read_predictions(settings: Settings, want: int, timeout_s: float, latencies: list | None = None):
    """Read the predictions topic until ``want`` records: (count, first arrival, last arrival) in monotonic
    seconds. With ``latencies``, append capture-to-arrival ms of the frames of cameras named ``lat-*``."""
    consumer = AIOKafkaConsumer(
        settings.topic("predictions"), bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    seen, first, last = 0, None, None
    deadline = time.monotonic() + timeout_s
    try:
        while seen < want and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                now, wall = time.monotonic(), time.time()
                first = first or now
                seen += len(batch)
                last = now
                if latencies is not None:
                    for r in batch:
                        p = decode_record(Prediction, r.value)
                        if p.camera_id.startswith("lat-"):
                            latencies.append((wall - p.captured_at) * 1e3)
    finally:
        await consumer.stop()
    return seen, first, last


async def pipeline(settings: Settings, cameras: int, frames: int, latency_s: float, log: Path, broker_pid: int):
    await create_topics(settings)
    sent = await publish(settings, cameras=cameras, max_frames=frames // cameras, fps=10_000.0)
    broker0 = children_cpu(broker_pid)
    worker = start_worker(settings, log)
    try:
        seen, first, last = await read_predictions(settings, sent, timeout_s=300)
        if seen < sent:
            raise RuntimeError(f"the worker produced {seen} of {sent} predictions; see {log}")
        worker_cpu = children_cpu(worker.pid)
        broker_cpu = children_cpu(broker_pid) - broker0
        fps = (seen - 1) / (last - first)
        # Latency at a load the worker sustains: 60% of the throughput just measured.
        rate = 0.6 * fps / cameras
        latencies: list[float] = []
        reader = asyncio.create_task(read_predictions(settings, 10**9, latency_s + 30, latencies))
        offered = await publish(settings, cameras=cameras, fps=rate, duration_s=latency_s, camera_prefix="lat-")
        deadline = time.monotonic() + 30
        while len(latencies) < offered and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        reader.cancel()
        return {
            "pipeline_fps": fps,
            "worker_cpu_s": worker_cpu,
            "broker_cpu_s": broker_cpu,
            "pipeline_frames": seen,
            "latencies": latencies,
            "offered_fps": rate * cameras,
        }
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer frames: finishes in under a minute")
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = one per core)")
    ap.add_argument(
        "--no-monitoring",
        action="store_true",
        help="the worker infers only (CVOPS_MONITORING=false): the same work as the naive consumer",
    )
    ap.add_argument(
        "--lanes", type=int, default=0, help="the worker's CVOPS_INFERENCE_LANES (0 = its default: one per core)"
    )
    ap.add_argument(
        "--embedding", default="", help="embedding model in the worker (default none: see ./dev bench embedding)"
    )
    args = ap.parse_args()
    quick = args.quick
    bare_s, naive_frames, pipe_frames, latency_s = (3, 100, 400, 8) if quick else (10, 400, 2000, 30)

    fetch_pacing.install(20)
    work = Path(tempfile.mkdtemp(prefix="cvops-bench-"))
    broker = EmbeddedBroker(work / "broker", port=free_port(), log_path=work / "broker.log").start()
    base = dict(
        _env_file=None,
        kafka_bootstrap=broker.bootstrap,
        frames_partitions=4,
        batch_max_size=args.batch,
        intra_op_threads=args.threads,
        inference_lanes=args.lanes,
        monitoring=not args.no_monitoring,
        store_dsn=f"chdb://{work / 'store'}",
        embedding_model=args.embedding,
    )
    try:
        # One session of --threads threads: bare batch 1 and the naive consumer (what a user writes first).
        detector = load_detector("nanodet-m", intra_op_threads=args.threads or None)
        providers = detector.providers
        print(f"model {detector.name}@{detector.version} on {','.join(detector.providers)}", file=sys.stderr)
        fps = bare(detector, args.batch, bare_s)
        one_session_bn = fps[args.batch]
        # The worker's sessions (CVOPS_INFERENCE_LANES): bare batch N, the ceiling the pipeline is held to.
        worker_detector = load_detector("nanodet-m", intra_op_threads=args.threads or None, lanes=args.lanes)
        lanes = len(getattr(worker_detector.session, "sessions", [None]))
        lanes_bn = bare(worker_detector, args.batch, bare_s, sizes=(args.batch,))[args.batch]
        fps[args.batch] = max(fps[args.batch], lanes_bn)
        del worker_detector

        naive_settings = Settings(**base, topic_prefix=f"bn{uuid.uuid4().hex[:6]}.")
        asyncio.run(create_topics(naive_settings))
        asyncio.run(publish(naive_settings, cameras=args.cameras, max_frames=naive_frames // args.cameras, fps=10_000))
        naive_fps = asyncio.run(naive(naive_settings, detector, naive_frames))
        del detector  # the worker process loads its own

        pipe_settings = Settings(**base, topic_prefix=f"bp{uuid.uuid4().hex[:6]}.")
        p = asyncio.run(
            pipeline(pipe_settings, args.cameras, pipe_frames, latency_s, work / "worker.log", broker.proc.pid)
        )
    finally:
        broker.stop()

    lat = p.pop("latencies")
    result = {
        "model": "nanodet-m@1.0.0",
        "providers": providers,
        "cameras": args.cameras,
        "batch": args.batch,
        "threads": args.threads or os.cpu_count(),
        "bare_fps_b1": round(fps[1], 1),
        "bare_fps_bN": round(fps[args.batch], 1),
        "bare_fps_bN_one_session": round(one_session_bn, 1),
        "lanes": lanes,
        "monitoring": not args.no_monitoring,
        "naive_fps": round(naive_fps, 1),
        "pipeline_fps": round(p["pipeline_fps"], 1),
        "efficiency": round(p["pipeline_fps"] / fps[args.batch], 3),
        "p50_ms": round(percentile(lat, 50), 1),
        "p95_ms": round(percentile(lat, 95), 1),
        "p99_ms": round(percentile(lat, 99), 1),
        "latency_offered_fps": round(p["offered_fps"], 1),
        "latency_samples": len(lat),
        "broker_cpu_s": round(p["broker_cpu_s"], 1),
        "worker_cpu_s": round(p["worker_cpu_s"], 1),
        "pipeline_frames": p["pipeline_frames"],
        "quick": quick,
    }
    rows = [
        ("bare ONNX Runtime, batch 1", f"{result['bare_fps_b1']} fps"),
        (f"bare ONNX Runtime, batch {args.batch}, one session", f"{result['bare_fps_bN_one_session']} fps"),
        (f"bare, batch {args.batch}, best of that and {lanes} lanes", f"{result['bare_fps_bN']} fps"),
        ("naive consumer (1 frame at a time)", f"{result['naive_fps']} fps"),
        (f"pipeline, {args.cameras} cameras", f"{result['pipeline_fps']} fps"),
        ("efficiency (pipeline / bare bN)", f"{result['efficiency']}"),
        (
            f"latency at {result['latency_offered_fps']} fps offered",
            f"p50 {result['p50_ms']} / p95 {result['p95_ms']} / p99 {result['p99_ms']} ms",
        ),
        ("CPU during pipeline phase", f"broker {result['broker_cpu_s']} s, worker {result['worker_cpu_s']} s"),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
