"""Concept drift end to end: a worker, the feedback topic fed by ``cvops feedback``, alerts and dead letters."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from core.contracts import Alert, DeadLetter, Prediction, decode_record
from core.settings import Settings
from core.topology import create_topics
from streams.gateway import publish
from tests.processes import cvops, env_of
from tests.test_pipeline import read_topic


async def read_until(settings: Settings, name: str, model, done, timeout_s: float = 120.0) -> list:
    """The records of topic ``name`` (as ``model``) from the start, once ``done(records)`` holds."""
    consumer = AIOKafkaConsumer(
        settings.topic(name), bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list = []
    try:
        deadline = time.monotonic() + timeout_s
        while not done(records) and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                records += [decode_record(model, r.value) for r in batch]
    finally:
        await consumer.stop()
    return records


pytestmark = pytest.mark.integration


def test_labels_that_disagree_with_the_model_raise_concept_drift(settings: Settings, tmp_path: Path):
    settings = settings.model_copy(update={"monitor_concept_reference": 20, "frames_partitions": 1})
    asyncio.run(create_topics(settings))
    log = tmp_path / "worker.log"
    with cvops(settings, "worker", log):
        assert asyncio.run(publish(settings, cameras=1, max_frames=80, fps=200.0)) == 80
        predictions = [decode_record(Prediction, r.value) for r in asyncio.run(read_topic(settings, "predictions", 80))]
        assert len(predictions) == 80, log.read_text()[-3000:]
        lines = (
            [  # the first 30 labelled as the model saw them, the other 50 as something it never sees
                {
                    "frame_id": p.frame_id,
                    "camera_id": p.camera_id,
                    "objects": [{"label": d.label} for d in p.detections],
                }
                for p in predictions[:30]
            ]
            + [
                {"frame_id": p.frame_id, "camera_id": p.camera_id, "objects": [{"label": "giraffe"}]}
                for p in predictions[30:]
            ]
        )
        lines.append({"frame_id": "cam-1:0:123456", "camera_id": predictions[0].camera_id, "objects": []})
        sent = subprocess.run(
            [sys.executable, "-m", "cli", "feedback", "-"],
            input="\n".join(json.dumps(x) for x in lines),
            env=env_of(settings),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout.splitlines()[-1]) == {"feedback_published": 81}
        alerts = asyncio.run(
            read_until(settings, "alerts", Alert, lambda rs: any(a.type == "concept_drift" for a in rs))
        )
        dead = asyncio.run(read_until(settings, "deadletters", DeadLetter, lambda rs: len(rs) >= 1))
    concept = [a for a in alerts if a.type == "concept_drift"]
    assert [(a.signal, a.status, a.camera_id) for a in concept] == [("label_error", "raised", predictions[0].camera_id)]
    assert [(d.source_topic, d.reason) for d in dead] == [(settings.topic("feedback"), "unknown_frame")]


def test_a_malformed_feedback_file_sends_nothing(settings: Settings, tmp_path: Path):
    bad = tmp_path / "labels.jsonl"
    deep, huge = "[" * 100_000 + "]" * 100_000, '{"frame_id": ' + "9" * 5000 + "}"
    bad.write_text(
        f'{{"frame_id": "a", "camera_id": "cam-1", "objects": []}}\n{{"frame_id": "b"}}\nnot json\n{deep}\n{huge}\n'
    )
    sent = subprocess.run(
        [sys.executable, "-m", "cli", "feedback", str(bad)],
        env=env_of(settings), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert sent.returncode == 2
    assert "line 2" in sent.stderr and "line 3" in sent.stderr and "nothing sent" in sent.stderr
    assert "line 4: too_deep" in sent.stderr and "line 5: number_too_large" in sent.stderr, sent.stderr[-2000:]
    assert "Traceback" not in sent.stderr
