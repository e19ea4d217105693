"""Soak: run the demo for a while and watch that memory and disk stay bounded.

    ./dev bench soak [--duration 1800] [--every 30] [--quick]

Samples, every ``--every`` seconds, the resident memory of each process the demo started (broker, worker,
api, gateway) and the disk used by ``.cvops/demo`` (broker data, store). Prints a table, then one JSON line:
first and last samples, peaks, and the growth over the second half of the run (a bounded run levels off).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

DEMO_DIR = Path(".cvops/demo")
ROLES = {"noida-db start": "broker", "cli worker": "worker", "cli api": "api",
         "cli gateway": "gateway"}  # fmt: skip


def processes() -> dict[str, int]:
    """Resident memory (MB) of each demo process, by role."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for needle, role in ROLES.items():
            if needle in cmd:
                rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")), 0)
                out[role] = max(out.get(role, 0), rss // 1024)
    return out


def disk_mb(path: Path) -> dict[str, float]:
    def du(p: Path) -> float:
        total = 0
        for root, _dirs, files in os.walk(p):  # the store merges parts meanwhile: files come and go
            for name in files:
                with contextlib.suppress(FileNotFoundError):
                    total += os.stat(os.path.join(root, name)).st_size
        return total / 2**20

    return {"broker_mb": round(du(path / "broker"), 1), "store_mb": round(du(path / "store"), 1)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=1800)
    ap.add_argument("--every", type=float, default=30)
    ap.add_argument("--quick", action="store_true", help="a 90 s run, sampled every 10 s")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.every = 90, 10
    demo = subprocess.Popen(
        [sys.executable, "-m", "cli", "demo", "--duration", str(args.duration)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    # Stopping the soak stops the demo, which stops everything it started.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: demo.send_signal(signal.SIGTERM))
    samples = []
    start = time.monotonic()
    print(f"{'t_s':>6} {'broker':>8} {'worker':>8} {'api':>8} {'gateway':>8} {'broker_mb':>10} {'store_mb':>9}")
    while demo.poll() is None:
        time.sleep(args.every)
        if demo.poll() is not None:
            break
        s = {"t_s": round(time.monotonic() - start), **processes(), **disk_mb(DEMO_DIR)}
        samples.append(s)
        print(
            f"{s['t_s']:>6} {s.get('broker', 0):>8} {s.get('worker', 0):>8} {s.get('api', 0):>8} "
            f"{s.get('gateway', 0):>8} {s['broker_mb']:>10} {s['store_mb']:>9}",
            flush=True,
        )
    final = json.loads(demo.stdout.read().strip().splitlines()[-1])
    keys = ["broker", "worker", "api", "gateway", "broker_mb", "store_mb"]
    half = samples[len(samples) // 2] if samples else {}
    result = {
        "duration_s": args.duration,
        "samples": len(samples),
        "peak": {k: max((s.get(k, 0) for s in samples), default=0) for k in keys},
        "last": {k: samples[-1].get(k, 0) for k in keys} if samples else {},
        "growth_second_half": {k: round(samples[-1].get(k, 0) - half.get(k, 0), 1) for k in keys} if samples else {},
        "demo": final,
        "unit": "rss in MB, disk in MB",
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
