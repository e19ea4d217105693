"""Faults on real parts: workers killed with SIGKILL mid-stream, a second worker taking over.

Every published frame must end as exactly one logical prediction and metric row in ClickHouse, and a
camera's monitoring state must come back from Kafka, not be learned again.
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


@pytest.fixture
def fault_settings(settings: Settings) -> Settings:
    # A 60-frame reference (about one pass over each simulated camera's shot), learned from the first
    # frames, so a dark frame later can only be flagged
    # right away if the learned range survived the worker's death.
    # A stable worker id: the restarted worker takes the dead one's place in the group at once (static
    # membership), which the embedded broker needs, since it never expires a dead member by itself.
    # The street footage is filmed hand-held: the moved-camera check is for fixed cameras, so it is off.
    # The dark frames sent are few: 3 of them in a row raise the range rule (its default, 10, is more).
    update = {"rule_warmup_frames": 60, "rule_consecutive": 3, "rule_cooldown_s": 0.0, "worker_id": "worker-a",
              "monitor_motion_every": 0}  # fmt: skip
    return settings.model_copy(update=update)


def raised(client: httpx.Client, camera_id: str) -> list[dict]:
    alerts = client.get("/api/v1/alerts", params={"camera_id": camera_id}).json()
    return [a for a in alerts if a["status"] == "raised"]


def test_worker_killed_mid_stream_loses_nothing_and_keeps_its_state(fault_settings: Settings, tmp_path: Path):
    s = fault_settings
    asyncio.run(create_topics(s))
    api_log, w1_log, w2_log = tmp_path / "api.log", tmp_path / "worker-1.log", tmp_path / "worker-2.log"
    with cvops(s, "api", api_log) as api:
        client = httpx.Client(base_url=f"http://127.0.0.1:{s.api_port}", timeout=10)
        wait_for(lambda: counts(client), "the API", [(api, api_log)])

        worker = start(s, "worker", w1_log)
        assert asyncio.run(publish(s, cameras=3, max_frames=100, fps=10_000.0)) == 300
        wait_for(lambda: (c := counts(client)) and c["predictions"] >= 100, "100 predictions", [(worker, w1_log)])
        stop(worker, signal.SIGKILL)  # mid-stream: about a third of the backlog is done

        with cvops(s, "worker", w2_log) as again:
            procs = [(api, api_log), (again, w2_log)]

            # Metrics and predictions are separate inserts: wait for both before comparing.
            def all_stored():
                c = counts(client)
                return c if c and c["metric_rows"] >= 300 and c["prediction_rows"] >= 300 else None

            # No second restart: a restarted worker used to sit idle in about 1 restart in 4, having lost
            # fetched frames inside faust after its recovery (fixed in streams/faust_fixes.py).
            done = wait_for(all_stored, "300 metric and prediction rows", procs)
            assert done["metric_rows"] == 300  # one logical row per frame, replays folded
            assert done["prediction_rows"] == 300
            assert done["predictions"] >= 300  # the topic may hold replays

            # cam-1 goes dark after the restart: only a worker that got the learned range back can tell
            # at once (a fresh one would spend these frames learning a new reference).
            dark = (Fault("cam-1", "dark", 0.0),)
            asyncio.run(publish(s, cameras=1, max_frames=6, fps=10_000.0, faults=dark))

            def brightness_alerts():
                wanted = ("data_drift", "brightness")
                return [a for a in raised(client, "cam-1") if (a["type"], a["signal"]) == wanted]

            alerts = wait_for(brightness_alerts, "a brightness alert on cam-1", procs, timeout_s=120)
            assert len(alerts) == 1
            wait_for(lambda: (c := counts(client)) and c["metric_rows"] >= 306, "306 metric rows", procs)
            assert len({a["alert_id"] for a in raised(client, "cam-1")}) == len(raised(client, "cam-1"))
            for camera in ("cam-2", "cam-3"):  # untouched cameras: no data drift
                assert [a for a in raised(client, camera) if a["type"] == "data_drift"] == []
