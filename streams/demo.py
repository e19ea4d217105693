"""``cvops demo``: the whole service on one machine, replaying real street footage as simulated cameras.

Processes (each a ``cvops`` subcommand, logs in ``.cvops/demo/logs``)::

    embedded broker ◀── gateway (N cameras of bikes.mp4; the last camera's lens goes soft mid-run)
          │
          ├──▶ worker  (faust: decode, batch, NanoDet-m, signals, health rule)
          └──▶ api     (store writer into embedded ClickHouse + HTTP API)

The demo supervises the worker: one that exits (a worker stops itself after ``CVOPS_WORKER_STALL_S`` with
frames waiting and none processed, :mod:`streams.liveness`) is started again, as compose's
``restart: unless-stopped`` or Kubernetes would; after ``WORKER_QUICK_EXITS`` exits in a row each within a
minute of its start, the demo gives up.

Every run starts from an empty ``.cvops/demo``. Stopping (Ctrl-C or ``--duration``) stops the gateway
first, lets the worker and the store catch up, then stops the rest, and prints one JSON summary line.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from core.settings import Settings
from streams.localbroker import EmbeddedBroker
from streams.process_group import terminate

DEMO_DIR = Path(".cvops/demo")
WORKER_QUICK_EXITS = 5  # exits in a row, each within a minute of its start, after which the demo gives up


class Child:
    def __init__(self, name: str, args: list[str], env: dict, logs: Path):
        self.name = name
        self.log = logs / f"{name}.log"
        self.started = time.monotonic()
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli", *args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        terminate(self.proc, timeout_s)


def _counts(client: httpx.Client) -> dict | None:
    try:
        r = client.get("/api/v1/counts", timeout=5)
        return r.json() if r.status_code == 200 else None
    except httpx.HTTPError:
        return None


def _summary_line(c: dict, fps: float, url: str) -> str:
    return (
        f"published {c['frames_published']:>6} | inferred {c['predictions']:>6} | {fps:5.1f} frames/s | "
        f"detections {c['detections']:>7} | alerts {c['alerts']:>3} | dead letters {c['dead_letters']:>3} | {url}"
    )


def run_demo(
    settings: Settings,
    *,
    duration_s: float | None = None,
    cameras: int = 4,
    fps: float = 5.0,
    source: str | None = None,
) -> int:
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    logs = DEMO_DIR / "logs"
    logs.mkdir(parents=True)
    port = int(settings.kafka_bootstrap.rsplit(":", 1)[-1]) if "," not in settings.kafka_bootstrap else 9092
    broker = EmbeddedBroker(DEMO_DIR / "broker", port, logs / "broker.log")
    env = {
        **os.environ,
        "CVOPS_KAFKA_BOOTSTRAP": broker.bootstrap,
        "CVOPS_STORE_DSN": f"chdb://{(DEMO_DIR / 'store').resolve()}",
        # Raw frames are only needed until the worker has read them: keep the broker's disk small.
        "CVOPS_FRAMES_RETENTION_MS": os.environ.get("CVOPS_FRAMES_RETENTION_MS", "60000"),
        "CVOPS_RECORDS_RETENTION_MS": os.environ.get("CVOPS_RECORDS_RETENTION_MS", "600000"),
        "CVOPS_FRAMES_PARTITIONS": os.environ.get("CVOPS_FRAMES_PARTITIONS", "4"),
        "CVOPS_WORKER_ID": os.environ.get("CVOPS_WORKER_ID", "worker-1"),
        # The demo footage is filmed hand-held; the moved-camera check is for fixed cameras.
        "CVOPS_MONITOR_MOTION_EVERY": os.environ.get("CVOPS_MONITOR_MOTION_EVERY", "0"),
    }
    fault_at = 60.0 if duration_s is None else max(15.0, duration_s * 0.5)
    url = f"http://{settings.api_host}:{settings.api_port}"
    children: list[Child] = []
    interrupted = False
    # Ctrl-C and SIGTERM both stop the demo cleanly, even where SIGINT was ignored by whoever started it.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    print(f"cvops demo: {cameras} cameras at {fps:g} fps; logs in {logs}", file=sys.stderr, flush=True)
    try:
        broker.start()
        children.append(Child("worker", ["worker"], env, logs))
        children.append(Child("api", ["api"], env, logs))
        client = httpx.Client(base_url=url)
        deadline = time.monotonic() + 120
        while _counts(client) is None:
            dead = [c.name for c in children if not c.alive()]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"{', '.join(dead) or 'api'} failed to start; see {logs}")
            time.sleep(0.5)
        gateway_args = ["gateway", "--cameras", str(cameras), "--fps", str(fps)]
        gateway_args += ["--fault", f"cam-{cameras}:blur:{fault_at:g}"]
        if source:
            gateway_args += ["--source", source]
        if duration_s is not None:
            gateway_args += ["--duration", str(duration_s)]
        gateway = Child("gateway", gateway_args, env, logs)
        children.append(gateway)
        print(f"API {url} (docs at {url}/docs); camera cam-{cameras} goes blurry at {fault_at:g} s", file=sys.stderr)
        started = time.monotonic()
        last, last_t = 0, started
        tty = sys.stderr.isatty()
        quick_exits = 0
        while gateway.alive():
            time.sleep(1.0)
            worker, api = children[:2]
            if not api.alive():
                raise RuntimeError(f"the api stopped unexpectedly; see {api.log}")
            if not worker.alive():
                quick_exits = quick_exits + 1 if time.monotonic() - worker.started < 60 else 1
                if quick_exits >= WORKER_QUICK_EXITS:
                    raise RuntimeError(
                        f"the worker exited {quick_exits} times in a row soon after starting; see {worker.log}"
                    )
                print(
                    f"\nthe worker exited with status {worker.proc.returncode}; starting it again (see {worker.log})",
                    file=sys.stderr,
                    flush=True,
                )
                children[0] = Child("worker", ["worker"], env, logs)
            c = _counts(client)
            if c is None:
                continue
            now = time.monotonic()
            rate = (c["predictions"] - last) / (now - last_t)
            last, last_t = c["predictions"], now
            if tty:
                print("\r" + _summary_line(c, rate, url), end="", file=sys.stderr, flush=True)
            elif int(now - started) % 10 == 0:
                print(_summary_line(c, rate, url), file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        print(file=sys.stderr)
        summary = _shutdown(children, url, broker, started_ok=bool(children))
    if summary is not None:
        print(json.dumps(summary), flush=True)
    return 130 if interrupted else (0 if summary is not None else 1)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _shutdown(children: list[Child], url: str, broker: EmbeddedBroker, started_ok: bool) -> dict | None:
    """Stop the gateway, let the worker and store writer drain, stop the rest; the final counts."""
    summary = None
    with contextlib.suppress(KeyboardInterrupt):
        by_name = {c.name: c for c in children}
        if "gateway" in by_name:
            by_name["gateway"].stop()
        if started_ok and "api" in by_name and by_name["api"].alive():
            print("draining: waiting for the worker and the store to catch up...", file=sys.stderr, flush=True)
            client = httpx.Client(base_url=url)
            deadline = time.monotonic() + 60
            c = _counts(client)
            while c is not None and time.monotonic() < deadline:
                done = c["predictions"] + c["dead_letters"] >= c["frames_published"]
                stored = c["metric_rows"] >= c["predictions"] and c["alert_rows"] >= c["alerts"]
                if done and stored:
                    break
                time.sleep(1.0)
                c = _counts(client) or c
            if c is not None:
                summary = {
                    "frames_published": c["frames_published"],
                    "frames_inferred": c["prediction_rows"],
                    "predictions": c["predictions"],
                    "metric_rows": c["metric_rows"],
                    "detections": c["detections"],
                    "alerts": c["alerts"],
                    "dead_letters": c["dead_letters"],
                }
        for child in reversed(children):
            child.stop()
        broker.stop()
    return summary
