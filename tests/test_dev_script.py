"""``./dev test`` exits with pytest's status, whatever becomes of the broker it started (CI believes that
status). The inner run kills its broker with SIGKILL, so that the broker's own exit status (137) is what the
script's clean-up sees."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("outcome", "status"), [("pass", 0), ("fail", 1)])
def test_dev_test_exits_with_pytests_status_when_its_broker_dies(outcome, status):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CVOPS_", "PYTEST_"))}
    env["CVOPS_DEV_CHECK_OUTCOME"] = outcome
    done = subprocess.run(
        [str(ROOT / "dev"), "test", "tests/dev_checks/broker_dies.py", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = "1 passed" if outcome == "pass" else "1 failed"
    assert summary in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.returncode == status, done.stdout[-2000:] + done.stderr[-2000:]
