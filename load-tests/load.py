"""Load test: the sustained throughput of ONE stream worker on this machine, and what monitoring costs.

    ./dev bench load [--quick] [--cameras 4] [--steps 5,10,15] [--step-s 30]

A load generator replays the bundled street footage (``streams.gateway.fixed_cameras``) as N fixed cameras,
each at its own size, a mix from 640x360 to 1920x1080 (``--quick``: 640x360 and 960x540), encoded once as
JPEG and published, evenly spaced, camera after camera, to an embedded broker on 127.0.0.1 (one per phase).
One ``cvops worker`` (default settings: batch 8, monitoring with embeddings, one ONNX Runtime thread per
core) consumes them, and this script reads its predictions.

The offered load steps up (total frames/s over all cameras), each step for a fixed time, the worker idle
at its start (the previous step's frames all answered). Per step: frames/s published (acknowledged by the
broker) and delivered (predictions of the step's frames received during the step, per second from the
first one), consumer lag sampled every second (frames published minus predictions received, for that
step's frames), capture-to-prediction latency percentiles (capture = the send time written in the frame's
header; the step's frames answered after it ended count too), CPU (% of one core) of the broker, the
worker, this load generator and everything else the machine ran meanwhile ("others": the cores are not
ours alone), and peak resident memory of the three. Before the first step the worker gets a warm-up at
the lowest load, not reported.

**A step is sustained** when the lag does not grow: the least-squares slope of the lag over the step is
under 5% of the offered frames/s (per second) or, in a short step, under one batch (``batch_max_size``
frames) over the whole step, since a worker that answers in batches makes the lag jitter by a batch; and
the lag at the end of the step is under 2 s worth of frames. The ladder stops at the first step that is
not sustained. ``sustained_fps`` is the publish rate of the highest sustained step; ``p99_ms``, ``max_lag``
and ``rss_mb`` are that step's.

**Monitoring cost.** The first step that is not sustained saturates the worker: its delivered frames/s is
the worker's capacity with monitoring, ``monitoring_on_fps``. A second worker with ``CVOPS_MONITORING=false``
(inference only: no measurements, monitors, metrics or embeddings) on fresh topics then runs from the best
step upwards (``--quick``: from the saturating step, two steps at most) until it saturates too:
``monitoring_off_fps``. ``monitoring_cost_ratio`` = on / off (1 = free; 0.5 = monitoring halves the
throughput). When a worker never saturates, its figure is a lower bound and the JSON says so. Each phase
has a broker of its own, started empty, so that the second does not pay for the first one's data. The
worker's CPU per frame (``worker_cpu_ms_per_frame``, per step; at the best step with monitoring on and off
in the summary) is the same comparison in CPU time, which other load on the machine disturbs less.

The broker, the worker and this generator share this machine's cores (the output says how many), as on a
laptop: the broker's CPU per MB is high, so larger frames cost throughput twice. Whatever else runs on the
machine takes its share too: the "others" CPU column shows it, and figures taken while it is high are not
this machine's capacity. Prints a table, then one JSON line. ``--quick`` finishes in about a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from aiokafka import AIOKafkaConsumer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import children_cpu, cpu_seconds, free_port, percentile, rss_mb, start_worker, tree_rss_mb

from core.contracts import FrameHeader, Prediction, decode_record, pack_frame
from core.settings import Settings
from core.topology import create_topics
from streams.devbroker import fetch_pacing
from streams.gateway import decode_jpeg, encode, fixed_cameras, make_producer
from streams.localbroker import EmbeddedBroker

SIZES = [(640, 360), (960, 540), (1280, 720), (1920, 1080)]
QUICK_SIZES = [(640, 360), (960, 540)]
FULL_STEPS = [5, 10, 15, 20, 25, 30, 40, 50, 60, 80]
QUICK_STEPS = [5, 10, 20, 30, 45, 60]
SLOPE_SHARE = 0.05  # lag slope under 5% of the offered frames/s...
FINAL_LAG_S = 2.0  # ...and a final lag under 2 s worth of frames: sustained


class Feed:
    """The frames of each camera: camera ``i`` replays a shot of the footage (as :func:`fixed_cameras` makes
    it) at size ``sizes[i % len(sizes)]``, ``frames`` of them forwards then backwards, encoded once."""

    def __init__(self, cameras: int, sizes: list[tuple[int, int]], frames: int, quality: int):
        cache: dict[tuple[int, int, int], bytes] = {}
        self.cameras: list[tuple[str, int, int, list[bytes]]] = []
        for c, shot in enumerate(fixed_cameras(None, cameras, quality=95)):
            w, h = sizes[c % len(sizes)]
            seq = []
            for _ in range(frames):
                item = next(shot)
                key = (id(item), w, h)
                if key not in cache:
                    image = cv2.resize(decode_jpeg(item.data), (w, h), interpolation=cv2.INTER_AREA)
                    cache[key] = encode(image, quality)
                seq.append(cache[key])
            self.cameras.append((f"cam-{c + 1}", w, h, seq + seq[-2:0:-1]))
        self.mean_bytes = float(np.mean([len(b) for *_, seq in self.cameras for b in seq]))


@dataclass
class Bucket:
    """What came back for the frames of one step."""

    received: int = 0
    first_at: float | None = None  # monotonic time of the first prediction
    latencies_ms: list[float] = field(default_factory=list)


class Phase:
    """One worker on topics of its own; steps run one after another while a reader counts predictions."""

    def __init__(self, name: str, settings: Settings, feed: Feed, work: Path):
        self.name, self.feed, self.work = name, feed, work
        self.broker = EmbeddedBroker(work / f"broker-{name}", port=free_port(), log_path=work / f"broker-{name}.log")
        self.settings = settings.model_copy(update={"kafka_bootstrap": self.broker.bootstrap})
        self.log = work / f"worker-{name}.log"
        self.buckets: dict[str, Bucket] = {}
        self.positions = [0] * len(feed.cameras)
        self.seq = 0
        self.worker: subprocess.Popen | None = None

    async def __aenter__(self) -> Phase:
        self.broker.start()
        self.broker_pid = self.broker.proc.pid
        await create_topics(self.settings)
        self.consumer = AIOKafkaConsumer(
            self.settings.topic("predictions"),
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
        )
        await self.consumer.start()
        self.reader = asyncio.create_task(self._read())
        self.producer = make_producer(self.settings)
        await self.producer.start()
        self.worker = start_worker(self.settings, self.log)
        return self

    async def __aexit__(self, *exc) -> None:
        try:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader
            await self.consumer.stop()
            await self.producer.stop()
        finally:
            stop_worker(self.worker)
            self.broker.stop()

    async def _read(self) -> None:
        while True:
            for batch in (await self.consumer.getmany(timeout_ms=200)).values():
                now, arrived = time.time(), time.monotonic()
                for record in batch:
                    p = decode_record(Prediction, record.value)
                    bucket = self.buckets.get(p.frame_id.split(":")[1])
                    if bucket is not None:
                        bucket.first_at = bucket.first_at or arrived
                        bucket.received += 1
                        bucket.latencies_ms.append((now - p.captured_at) * 1e3)

    def pids(self) -> dict[str, int]:
        return {"broker": self.broker_pid, "worker": self.worker.pid, "loadgen": os.getpid()}

    def cpu(self) -> dict[str, float]:
        pids = self.pids()
        return {
            "broker": children_cpu(pids["broker"]),
            "worker": children_cpu(pids["worker"]),
            "loadgen": cpu_seconds(pids["loadgen"]),  # its own only: broker and worker are its children
        }

    def rss(self) -> dict[str, float]:
        pids = self.pids()
        return {
            "broker": tree_rss_mb(pids["broker"]),
            "worker": tree_rss_mb(pids["worker"]),
            "loadgen": rss_mb(pids["loadgen"]),
        }

    async def warm_up(self, fps: float, seconds: float, timeout_s: float = 180.0) -> None:
        """Publish at ``fps`` until the worker answers, then ``seconds`` more; wait for it to catch up."""
        sid = "warmup"
        self.buckets[sid] = bucket = Bucket()
        deadline = time.monotonic() + timeout_s
        while bucket.received == 0:
            if self.worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {self.worker.returncode}; see {self.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no prediction in {timeout_s:.0f} s; see {self.log}")
            await self._publish(sid, fps, 1.0, [0])
        acked = [0]
        await self._publish(sid, fps, seconds, acked)
        await asyncio.sleep(0.3)
        await self._drain(bucket, acked[0], 30.0)

    async def _publish(self, sid: str, fps: float, seconds: float, acked: list[int]) -> None:
        """Publish frames for ``seconds`` at ``fps`` in all, one camera after another, counting in ``acked[0]``
        those the broker acknowledged (it goes on counting after this returns)."""

        def ack(fut: asyncio.Future) -> None:
            if not fut.cancelled() and fut.exception() is None:
                acked[0] += 1

        topic, cams = self.settings.topic("frames"), self.feed.cameras
        start = time.monotonic()
        n = 0
        while (now := time.monotonic()) < start + seconds:
            due = start + n / fps
            if due > now:
                await asyncio.sleep(due - now)
            c = n % len(cams)
            camera, w, h, frames = cams[c]
            data = frames[self.positions[c] % len(frames)]
            self.positions[c] += 1
            self.seq += 1
            header = FrameHeader(
                frame_id=f"{camera}:{sid}:{self.seq}", camera_id=camera, seq=self.seq, captured_at=time.time(),
                encoding="jpeg", width=w, height=h,
            )  # fmt: skip
            fut = await self.producer.send(topic, pack_frame(header, data), key=camera.encode())
            fut.add_done_callback(ack)
            n += 1

    async def _drain(self, bucket: Bucket, want: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while bucket.received < want and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        return bucket.received >= want

    async def step(self, name: str, offered: float, seconds: float, drain_s: float) -> dict:
        sid = f"s{uuid.uuid4().hex[:6]}"
        self.buckets[sid] = bucket = Bucket()
        cpu0, busy0, t0 = self.cpu(), busy_cpu_s(), time.monotonic()
        samples: list[tuple[float, int]] = []
        peak = self.rss()
        acked = [0]

        async def sample() -> None:
            while True:
                await asyncio.sleep(1.0)
                samples.append((time.monotonic() - t0, acked[0] - bucket.received))
                for role, mb in self.rss().items():
                    peak[role] = max(peak[role], mb)

        sampler = asyncio.create_task(sample())
        await self._publish(sid, offered, seconds, acked)
        await asyncio.sleep(0.3)  # the last sends get their acknowledgements
        sampler.cancel()
        end = time.monotonic()
        elapsed, received, first = end - t0, bucket.received, bucket.first_at or end
        samples.append((elapsed, acked[0] - received))
        cpu1, busy1 = self.cpu(), busy_cpu_s()
        cpu_pct = {r: round(100 * (cpu1[r] - cpu0[r]) / elapsed, 1) for r in cpu0}
        worker_s = cpu1["worker"] - cpu0["worker"]
        # whatever else this machine ran meanwhile (other people's processes share the cores too)
        cpu_pct["others"] = round(max(0.0, 100 * (busy1 - busy0) / elapsed - sum(cpu_pct.values())), 1)
        # from the first prediction on: the step starts with an idle worker, which answers one latency later
        delivered = (received - 1) / (end - first) if received > 1 and end > first else 0.0
        published = acked[0]
        drained = await self._drain(bucket, published, drain_s)
        lags = np.array(samples, dtype=float)
        slope = float(np.polyfit(lags[:, 0], lags[:, 1], 1)[0]) if len(lags) >= 3 else float("nan")
        final_lag = int(lags[-1, 1])
        rate = published / seconds
        # growth under 5% of the offered rate, or under one batch over the whole step (a batch's worth of jitter
        # in a short step is not growth)
        tolerance = max(SLOPE_SHARE * rate, self.settings.batch_max_size / seconds)
        sustained = bool(slope < tolerance and final_lag < FINAL_LAG_S * rate)
        lat = bucket.latencies_ms
        return {
            "phase": name,
            "offered_fps": offered,
            "published_fps": round(rate, 2),
            "delivered_fps": round(delivered, 2),
            "sustained": sustained,
            "lag_slope": round(slope, 3),
            "max_lag": int(lags[:, 1].max()),
            "final_lag": final_lag,
            "lag": [int(v) for v in lags[:, 1]],
            "drained": drained,
            "p50_ms": round(percentile(lat, 50), 1),
            "p95_ms": round(percentile(lat, 95), 1),
            "p99_ms": round(percentile(lat, 99), 1),
            "cpu_pct": cpu_pct,
            "worker_cpu_ms_per_frame": round(1e3 * worker_s / received, 1) if received else None,
            "rss_mb": {r: round(v, 1) for r, v in peak.items()},
        }


def busy_cpu_s() -> float:
    """CPU seconds this machine spent busy (all processes, all cores), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def stop_worker(worker: subprocess.Popen | None) -> None:
    if worker is None or worker.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)


async def ladder(phase: Phase, name: str, steps: list[float], seconds: float, out: list[dict]) -> dict | None:
    """Run ``steps`` in order until one is not sustained; return that one (None if all were)."""
    for offered in steps:
        result = await phase.step(name, offered, seconds, drain_s=max(10.0, seconds))
        out.append(result)
        print_step(result)
        if not result["sustained"]:
            return result
    return None


HEADER = (
    f"{'phase':<10} {'offered':>7} {'published':>9} {'delivered':>9} {'p50 ms':>7} {'p99 ms':>7} {'max lag':>7} "
    f"{'slope':>6} {'ok':>3}  {'cpu% broker/worker/gen/others':>29}  {'rss MB broker/worker/gen':>24}"
)


def print_step(r: dict) -> None:
    cpu, rss = r["cpu_pct"], r["rss_mb"]
    print(
        f"{r['phase']:<10} {r['offered_fps']:>7g} {r['published_fps']:>9} {r['delivered_fps']:>9} {r['p50_ms']:>7} "
        f"{r['p99_ms']:>7} {r['max_lag']:>7} {r['lag_slope']:>6} {'yes' if r['sustained'] else 'NO':>3}  "
        f"{cpu['broker']:>6}/{cpu['worker']:>6}/{cpu['loadgen']:>6}/{cpu['others']:>6}    "
        f"{rss['broker']:>6.0f}/{rss['worker']:>6.0f}/{rss['loadgen']:>6.0f}",
        flush=True,
    )


async def run(args, work: Path) -> dict:
    sizes = QUICK_SIZES if args.quick else SIZES
    feed = Feed(args.cameras, sizes, frames=20 if args.quick else 40, quality=80)
    base = dict(
        _env_file=None,
        frames_partitions=4,
        store_dsn=f"chdb://{work / 'store'}",
        monitor_expected_fps=min(args.steps) / args.cameras,
        frames_retention_ms=120_000,
    )
    cores = os.cpu_count()
    print(
        f"{args.cameras} cameras, sizes {', '.join(f'{w}x{h}' for w, h in sizes)}, {feed.mean_bytes / 1024:.0f} KiB "
        f"per frame on average; {args.step_s:g} s per step; {cores} cores shared by the broker, the worker and "
        "this load generator",
        flush=True,
    )
    print(HEADER, flush=True)
    steps: list[dict] = []
    async with Phase("on", Settings(**base, topic_prefix="load."), feed, work) as phase:
        await phase.warm_up(min(args.steps), args.warmup_s)
        saturated_on = await ladder(phase, "monitor on", args.steps, args.step_s, steps)
    sustained = [s for s in steps if s["sustained"]]
    best = sustained[-1] if sustained else None
    # monitoring off: from the best step up (--quick: from the saturating step, two steps at most)
    first = (saturated_on or best) if args.quick else (best or saturated_on)
    start = args.steps.index(first["offered_fps"]) if first else 0
    off_steps = args.steps[start : start + 2] if args.quick else args.steps[start:]
    before = len(steps)
    async with Phase("off", Settings(**base, topic_prefix="load.", monitoring=False), feed, work) as phase:
        await phase.warm_up(min(args.steps), args.warmup_s)
        saturated_off = await ladder(phase, "monitor off", off_steps, args.step_s, steps)
    off = steps[before:]
    on_fps = saturated_on["delivered_fps"] if saturated_on else max(s["delivered_fps"] for s in steps[:before])
    off_fps = saturated_off["delivered_fps"] if saturated_off else max(s["delivered_fps"] for s in off)
    same = next((s for s in off if best and s["offered_fps"] == best["offered_fps"]), None)
    return {
        "sustained_fps": best["published_fps"] if best else 0.0,
        "p99_ms": best["p99_ms"] if best else None,
        "max_lag": best["max_lag"] if best else None,
        "rss_mb": best["rss_mb"] if best else None,
        "monitoring_on_fps": on_fps,
        "monitoring_off_fps": off_fps,
        "monitoring_cost_ratio": round(on_fps / off_fps, 3) if off_fps else None,
        "monitoring_on_saturated": saturated_on is not None,
        "monitoring_off_saturated": saturated_off is not None,
        "worker_cpu_ms_per_frame_at_best": {
            "monitor_on": best["worker_cpu_ms_per_frame"] if best else None,
            "monitor_off": same["worker_cpu_ms_per_frame"] if same else None,
        },
        "steps": steps,
        "cameras": args.cameras,
        "sizes": [f"{w}x{h}" for w, h in sizes],
        "mean_frame_kib": round(feed.mean_bytes / 1024, 1),
        "step_s": args.step_s,
        "cores": cores,
        "shared_cores": "broker, worker and load generator share these cores",
        "rule": f"sustained: lag slope < max({SLOPE_SHARE:.0%} of offered fps, one batch per step) and final lag < "
        f"{FINAL_LAG_S:g} s of frames",
        "quick": args.quick,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter steps, smaller frames: about a minute")
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--steps", default="", help="offered loads in total frames/s, comma separated, increasing")
    ap.add_argument("--step-s", type=float, default=0.0, help="seconds per step (default 30, --quick 6)")
    args = ap.parse_args()
    args.steps = [float(s) for s in args.steps.split(",") if s] or (QUICK_STEPS if args.quick else FULL_STEPS)
    args.step_s = args.step_s or (6.0 if args.quick else 30.0)
    args.warmup_s = 3.0 if args.quick else 10.0
    if args.steps != sorted(args.steps):
        ap.error("--steps must increase")

    fetch_pacing.install(20)  # the embedded broker answers empty fetches at once: do not spin on them
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="cvops-load-"))
    result = asyncio.run(run(args, work))
    result["wall_s"] = round(time.monotonic() - started, 1)
    result["others_cpu_pct_mean"] = round(float(np.mean([s["cpu_pct"]["others"] for s in result["steps"]])), 1)
    if result["others_cpu_pct_mean"] > 20:
        print(
            f"warning: other processes used {result['others_cpu_pct_mean']}% of a core on average during the steps; "
            "these figures understate what this machine sustains"
        )
    print(
        f"sustained {result['sustained_fps']} fps (p99 {result['p99_ms']} ms, max lag {result['max_lag']} frames); "
        f"saturated: monitoring on {result['monitoring_on_fps']} fps, off {result['monitoring_off_fps']} fps, "
        f"ratio {result['monitoring_cost_ratio']}; {result['cores']} cores shared by broker, worker and generator; "
        f"logs in {work}"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
