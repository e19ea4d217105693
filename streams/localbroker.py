"""The embedded Kafka-protocol broker for laptops and tests: noida-db, installed from PyPI.

Why noida-db and not tansu (both install here): per-camera state is restored from a changelog, which
needs a broker that answers ListOffsets with the true end of a partition. noida-db does (faust table
recovery gives exact counts after a restart); tansu answers with the first offset of the last batch,
which breaks end offsets, lag and table recovery, and it has no idempotent producer. noida-db costs
more CPU per MB (it rewrites a JSON state file), so cvops keeps raw frames in it only briefly. It is
a development broker, single node: production points ``CVOPS_KAFKA_BOOTSTRAP`` at a real cluster.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from streams.process_group import terminate

log = logging.getLogger("cvops.broker")


def _executable() -> str:
    beside = Path(sys.executable).with_name("noida-db")
    found = str(beside) if beside.exists() else shutil.which("noida-db")
    if not found:
        raise FileNotFoundError("the embedded broker needs noida-db: pip install 'cvops[local]'")
    return found


def port_open(host: str, port: int) -> bool:
    with contextlib.closing(socket.socket()) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class EmbeddedBroker:
    """A noida-db process serving Kafka on ``127.0.0.1:port`` with its data in ``data_dir``."""

    def __init__(self, data_dir: str | Path, port: int = 9092, log_path: str | Path | None = None):
        self.data_dir = Path(data_dir)
        self.port = port
        self.log_path = Path(log_path) if log_path else self.data_dir.with_suffix(".log")
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> EmbeddedBroker:
        if port_open("127.0.0.1", self.port):
            raise RuntimeError(f"port {self.port} is already in use: is another broker running?")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [_executable(), "start", "--data-dir", str(self.data_dir), "--only", "kafka"]
        cmd += ["--kafka-port", str(self.port)]
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not port_open("127.0.0.1", self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"the broker exited with {self.proc.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the broker did not open port {self.port} in {timeout_s:.0f} s")
            time.sleep(0.1)
        log.info("broker up at %s (data in %s, pid %d)", self.bootstrap, self.data_dir, self.proc.pid)
        return self

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM (the broker saves its state, up to ~15 s), then SIGKILL if it is still there."""
        if self.proc is None or self.proc.poll() is not None:
            return
        terminate(self.proc, timeout_s)
        log.info("broker stopped")

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
