"""Run only by ``tests/test_dev_script.py``, through ``./dev test`` itself (pytest collects this file only when
it is named on the command line): it kills the broker that ``./dev test`` started, as a broker that crashes or
fails its own shutdown would end, then passes or fails as ``CVOPS_DEV_CHECK_OUTCOME`` says."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def test_the_broker_ends_badly_then_this_test_decides():
    shell = os.getppid()  # the bash running ./dev, whose other child is the broker
    killed = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == shell and b"streams.cli broker" in cmdline:
            os.kill(int(proc.name), signal.SIGKILL)
            killed += 1
    assert killed == 1, "the broker started by ./dev test was not found"
    assert os.environ.get("CVOPS_DEV_CHECK_OUTCOME", "pass") == "pass"
