"""Running cvops processes from tests, as a user would run them: ``python -m cli COMMAND``."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from core.settings import Settings
from streams.process_group import terminate


def env_of(settings: Settings) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CVOPS_")}
    for name, value in settings.model_dump().items():
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"CVOPS_{name.upper()}"] = str(value)
    return env


def start(settings: Settings, command: str, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli", command],
            env=env_of(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    terminate(proc, 30.0, sig)


@contextlib.contextmanager
def cvops(settings: Settings, command: str, log: Path):
    proc = start(settings, command, log)
    try:
        yield proc
    finally:
        stop(proc)


def wait_for(check, what: str, procs, timeout_s: float = 240.0, fail: bool = True, also: list[Path] = ()):
    """Poll ``check`` until it returns a truthy value; fail with ``what`` and the logs otherwise (or, with
    ``fail=False``, return None). ``procs`` are (process, log) pairs that must stay alive meanwhile; the
    logs in ``also`` (of processes already gone) are shown too on failure."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc, log in procs:
            if proc.poll() is not None:
                pytest.fail(f"{log.name} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        value = check()
        if value:
            return value
        time.sleep(0.5)
    if not fail:
        return None
    logs = "\n".join(f"--- {log.name}\n{log.read_text()[-2000:]}" for log in [*(log for _, log in procs), *also])
    pytest.fail(f"timed out waiting for {what}\n{logs}")


def counts(client: httpx.Client) -> dict | None:
    try:
        r = client.get("/api/v1/counts")
        return r.json() if r.status_code == 200 else None
    except httpx.HTTPError:
        return None
