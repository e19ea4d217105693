"""Run only by ``tests/test_dev_script.py``, through ``./dev test`` itself (pytest collects this file only when
it is named on the command line): it kills the broker that ``./dev test`` started, as a broker that crashes or
fails its own shutdown would end, then passes or fails as ``CVOPS_DEV_CHECK_OUTCOME`` says."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def processes() -> dict[int, tuple[int, bytes]]:
    """Every process: its parent's pid and its command line."""
    found = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                found[int(proc.name)] = (ppid, (proc / "cmdline").read_bytes().replace(b"\0", b" "))
            except (OSError, IndexError, ValueError):
                continue
    return found


def test_the_broker_ends_badly_then_this_test_decides():
    shell = os.getppid()  # the bash running ./dev, whose other child is the broker
    table = processes()
    brokers = [pid for pid, (ppid, cmd) in table.items() if ppid == shell and b"cli broker" in cmd]
    assert len(brokers) == 1, "the broker started by ./dev test was not found"
    # the broker's own processes first (killing the command alone would leave them running), then the command
    family, grew = set(brokers), True
    while grew:
        more = {pid for pid, (ppid, _) in table.items() if ppid in family} - family
        family |= more
        grew = bool(more)
    for pid in sorted(family - set(brokers)) + brokers:
        os.kill(pid, signal.SIGKILL)
    assert os.environ.get("CVOPS_DEV_CHECK_OUTCOME", "pass") == "pass"
