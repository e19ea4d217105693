"""Helpers shared by the benchmarks: CPU and memory of a process tree from ``/proc`` (Linux), a free local port,
a ``cvops worker`` subprocess with given settings, percentiles. Imported as ``_common`` (a benchmark's own
folder is first on ``sys.path`` when it runs as a script)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from core.settings import Settings


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of one process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """The live descendants of a process (children, their children...)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if ppid == pid:
                out += [int(entry), *descendants(int(entry))]
    return out


def children_cpu(pid: int) -> float:
    """CPU seconds of a process and its descendants that are still alive."""
    total = 0.0
    for p in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError):  # it ended meanwhile
            total += cpu_seconds(p)
    return total


def rss_mb(pid: int) -> float:
    """Resident memory of one process (VmRSS), MB; 0 when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmRSS")), 0.0)


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its live descendants, MB (the embedded broker is a launcher and the
    broker itself)."""
    return sum(rss_mb(p) for p in [pid, *descendants(pid)])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_worker(settings: Settings, log: Path, command: str = "worker") -> subprocess.Popen:
    """``cvops worker`` (or another ``cvops`` command) with exactly ``settings`` (as ``CVOPS_*`` variables), in
    its own process group."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CVOPS_")}
    env.update({f"CVOPS_{k.upper()}": str(v) for k, v in settings.model_dump().items()})
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli", command],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")
