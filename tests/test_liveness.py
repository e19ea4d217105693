"""A worker that stops taking frames with frames waiting exits by itself once ``CVOPS_WORKER_STALL_S`` has
passed, and its supervisor (here ``cvops demo``) starts it again: every frame published before, during and
after the stall is processed in the end, with no restart done by the test.

The stall is real to the rest of the system: the worker stays a member of its group and holds its
partitions, but its frames agent takes nothing more (``CVOPS_DEBUG_STALL_FILE``, a test hook, off by
default), as when faust lost fetched records (``streams/faust_fixes.py``) or inference hung.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from streams.liveness import EXIT_STALLED
from streams.process_group import terminate
from tests.conftest import free_port
from tests.processes import counts, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]

STALL_S = 15  # short for the test: a worker on a busy machine still commits every second or two


def test_a_stalled_worker_exits_and_the_demo_starts_it_again(tmp_path: Path):
    api_port = free_port()
    stall_file = tmp_path / "stall"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CVOPS_")}
    env |= {
        "CVOPS_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",  # the demo's own embedded broker
        "CVOPS_API_PORT": str(api_port),
        "CVOPS_WORKER_STALL_S": str(STALL_S),
        "CVOPS_DEBUG_STALL_FILE": str(stall_file),
        "CVOPS_INTRA_OP_THREADS": "2",
        "CVOPS_BATCH_MAX_WAIT_MS": "20",
        "CVOPS_EMBEDDING_MODEL": "",
    }
    out, err = tmp_path / "demo.out", tmp_path / "demo.err"
    worker_log = tmp_path / ".cvops" / "demo" / "logs" / "worker.log"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        demo = subprocess.Popen(
            [sys.executable, "-m", "cli", "demo", "--cameras", "2", "--fps", "2"],
            cwd=tmp_path,
            env=env,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=10)
        procs = [(demo, err)]
        # An idle worker (before the cameras start) and a busy one: neither stops.
        wait_for(lambda: (c := counts(client)) and c["prediction_rows"] >= 20, "20 frames processed", procs)

        stall_file.touch()
        wait_for(lambda: not stall_file.exists(), "the worker to take the stall hook", procs, also=[worker_log])

        def stopped_and_restarted():
            return "stalled: frames waiting" in worker_log.read_text() and "starting it again" in err.read_text()

        wait_for(stopped_and_restarted, "the worker to stop for a stall and be started again", procs, also=[worker_log])
        published_at_restart = counts(client)["frames_published"]

        def caught_up_past_the_stall():
            c = counts(client)
            return c and c["prediction_rows"] >= published_at_restart + 10

        wait_for(caught_up_past_the_stall, "frames after the stall processed", procs, also=[worker_log])
        demo.send_signal(signal.SIGINT)  # the demo stops the cameras, lets the worker catch up, and sums up
        assert demo.wait(timeout=240) == 130
    finally:
        terminate(demo, 30.0)

    summary = json.loads(out.read_text().strip().splitlines()[-1])
    assert summary["frames_published"] > published_at_restart
    assert summary["dead_letters"] == 0
    assert summary["frames_inferred"] == summary["frames_published"], summary  # one row per frame, none lost
    log = worker_log.read_text()
    stalls = [line for line in log.splitlines() if "stalled: frames waiting" in line]
    assert len(stalls) == 1, stalls  # idle and busy, the worker never stopped; stalled, once
    assert "committed" in stalls[0] and "end" in stalls[0] and f"status {EXIT_STALLED}" in stalls[0]
    assert err.read_text().count("starting it again") == 1
    assert f"exited with status {EXIT_STALLED}" in err.read_text()
