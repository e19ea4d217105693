"""Two workers share the partitions; when one stops or dies, the other takes over its cameras and their
learned state.

A worker stopped with SIGTERM leaves the group cleanly. A worker killed outright (SIGKILL) stays in the group
until something removes it: a Kafka broker does after ``CVOPS_KAFKA_SESSION_TIMEOUT_S``; the embedded
development broker never does, and the live worker removes it once it has sent no status for
``CVOPS_PEER_TIMEOUT_S`` (:mod:`streams.devbroker.peers`).
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest

from core.settings import Settings
from core.topology import create_topics
from streams.gateway import Fault, publish
from tests.processes import counts, cvops, start, stop, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_a_worker_takes_over_the_cameras_and_state_of_one_that_stops(settings: Settings, tmp_path: Path, sig):
    # Worker b has dynamic membership: a static member does not leave the group when it stops (it is
    # expected back). Worker a is static, as the README asks on the embedded broker: that broker bumps the
    # generation the moment b leaves, so a's next offset commit is refused and aiokafka rejoins under a new
    # member id; a dynamic a would leave its old id behind as a member the broker never expires.
    # A killed b is removed by a after 30 s without a status from it (the shortest timeout allowed).
    # The dark frames sent are few: 3 of them in a row raise the range rule (its default, 10, is more).
    update = {"rule_warmup_frames": 60, "rule_consecutive": 3, "rule_cooldown_s": 0.0, "worker_id": "",
              "monitor_motion_every": 0}  # fmt: skip
    s = settings.model_copy(update=update | {"peer_timeout_s": 30.0})
    asyncio.run(create_topics(s))
    logs = {n: tmp_path / f"{n}.log" for n in ("api", "worker-a", "worker-b")}
    s_a = s.model_copy(update={"worker_id": f"{s.app_id}-a"})
    with cvops(s, "api", logs["api"]) as api, cvops(s_a, "worker", logs["worker-a"]) as a:
        client = httpx.Client(base_url=f"http://127.0.0.1:{s.api_port}", timeout=10)
        procs = [(api, logs["api"]), (a, logs["worker-a"])]
        wait_for(lambda: counts(client), "the API", procs)
        b = start(s, "worker", logs["worker-b"])
        try:
            procs_b = [*procs, (b, logs["worker-b"])]

            def split():
                alive = [w["status"] for w in client.get("/api/v1/workers").json() if w["alive"]]
                held = [sorted(w["partitions"]) for w in alive if w["partitions"]]
                return len(held) == 2 and sorted(p for h in held for p in h) == [0, 1, 2] and held

            wait_for(split, "both workers holding partitions", procs_b, timeout_s=120)
            assert asyncio.run(publish(s, cameras=3, max_frames=100, fps=10_000.0)) == 300
            wait_for(lambda: (c := counts(client)) and c["metric_rows"] >= 300, "300 metric rows", procs_b)
        finally:
            # SIGTERM: b commits, leaves the group, and its partitions move to worker a at once.
            # SIGKILL: b stays a member until a removes it; frames it processed but had not committed replay.
            stop(b, sig)

        def alone():
            alive = [w["status"] for w in client.get("/api/v1/workers").json() if w["alive"]]
            return [w for w in alive if sorted(w["partitions"]) == [0, 1, 2]]

        wait_for(alone, "worker a holding every partition", procs, timeout_s=120, also=[logs["worker-b"]])
        if sig == signal.SIGKILL:  # the embedded broker never expires b: a removed it
            assert "removed group member" in logs["worker-a"].read_text()
        # Every camera goes dark: only a worker with the learned ranges (restored from the changelog for the
        # cameras it took over) flags that within these 6 frames; a fresh monitor would be learning.
        dark = tuple(Fault(f"cam-{i}", "dark", 0.0) for i in (1, 2, 3))
        asyncio.run(publish(s, cameras=3, max_frames=6, fps=10_000.0, faults=dark))

        def brightness_raised():
            alerts = client.get("/api/v1/alerts", params={"type": "data_drift", "status": "raised"}).json()
            return {a["camera_id"] for a in alerts if a["signal"] == "brightness"} == {"cam-1", "cam-2", "cam-3"}

        wait_for(brightness_raised, "a brightness alert on every camera", procs, timeout_s=120)
        alerts = client.get("/api/v1/alerts", params={"status": "raised"}).json()
        ids = [a["alert_id"] for a in alerts]
        assert len(ids) == len(set(ids)), "an alert raised twice"
