"""Poison records on every topic cvops consumes, against the real broker and the real processes: the API (its
store writer, live alert feed, worker directory and config follower) and a worker (its feedback agent, config
follower and worker directory). Each bad record is dead-lettered with its reason and original bytes, or, on a
compacted or status topic (config, workers), skipped with its offset in the log; the valid records after it,
on its partition and on another, arrive; and every process keeps running. (The store writer's own topics,
record by record, are in tests/store/test_writer_poison.py; frames in tests/test_pipeline.py.)"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from core.contracts import (
    CameraConfig,
    DeadLetter,
    Feedback,
    MonitorOverrides,
    Prediction,
    WorkerStatus,
    decode_record,
    encode_record,
)
from core.settings import Settings
from core.topology import create_topics
from streams.gateway import publish
from tests.api.test_alerts import read_events
from tests.processes import cvops, wait_for
from tests.store.records import alert
from tests.test_pipeline import read_topic

pytestmark = pytest.mark.integration


def spliced(record, field: str, token: str) -> bytes:
    """``record``'s JSON with ``field``'s value replaced by the raw JSON text ``token``."""
    raw = json.loads(encode_record(record))
    raw[field] = "\x00marker\x00"
    return json.dumps(raw).replace('"\\u0000marker\\u0000"', token).encode()


def poisons(record, number: str, text: str) -> list[tuple[bytes | None, set[str]]]:
    """Hostile variants of ``record`` (``number`` and ``text`` name one of its fields of each kind), each with
    the reasons it may be refused with."""
    return [
        (spliced(record, "extra", "[" * 20_000 + "]" * 20_000), {"too_deep"}),
        (spliced(record, number, "7" * 5000), {"number_too_large"}),
        (spliced(record, number, "NaN"), {"non_finite", "bad_record"}),
        (spliced(record, number, "-1e400"), {"non_finite", "bad_record"}),
        (spliced(record, text, '"\\udc00"'), {"bad_json"}),
        (b"\xc3\x28 not utf-8", {"bad_json"}),
        (b'"just a string"', {"bad_record"}),
        (None, {"empty_message"}),
        (spliced(record, text, "{}"), {"bad_record"}),
        (spliced(record, "schema_version", "99"), {"unknown_schema_version"}),
    ]


async def send(settings: Settings, topic: str, items: list[tuple[bytes | None, bytes, int]]) -> list[int]:
    """Send (value, key, partition) in order; the offsets they got."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        return [
            (await producer.send_and_wait(settings.topic(topic), value, key=key, partition=partition)).offset
            for value, key, partition in items
        ]
    finally:
        await producer.stop()


async def dead_letters(settings: Settings, done, timeout_s: float = 180.0) -> list[DeadLetter]:
    consumer = AIOKafkaConsumer(settings.topic("deadletters"), bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest")  # fmt: skip
    await consumer.start()
    out: list[DeadLetter] = []
    try:
        deadline = time.monotonic() + timeout_s
        while not done(out) and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                out += [decode_record(DeadLetter, r.value) for r in batch]
    finally:
        await consumer.stop()
    return out


def status(worker_id: str, sent_at: float) -> WorkerStatus:
    return WorkerStatus(
        worker_id=worker_id, model_name="m", model_version="1", providers=[], batch_max_size=8, partitions=[],
        frames_per_s=0, mean_batch=0, dead_letters=0, alerts=0, sent_at=sent_at,
    )  # fmt: skip


def poison_then_valid_configs(settings: Settings, updated_at: float) -> list[int]:
    """Poison records on the config topic (one partition), then a valid fleet record: the poisons' offsets."""
    good = CameraConfig(scope="fleet", overrides=MonitorOverrides(expected_fps=7.0), updated_at=updated_at)
    bad = [v for v, _ in poisons(good, "updated_at", "updated_by")]
    bad.append(encode_record(good.model_copy(update={"scope": "cam-other"})))  # its scope is not its key
    items = [(v, b"fleet", 0) for v in bad] + [(encode_record(good), b"fleet", 0)]
    return asyncio.run(send(settings, "config", items))[:-1]


def poison_then_valid_statuses(settings: Settings, worker_id: str) -> list[int]:
    good = status(worker_id, time.time())
    bad = [v for v, _ in poisons(good, "sent_at", "worker_id")]
    items = [(v, b"w", 0) for v in bad] + [(encode_record(good), b"w", 0)]
    return asyncio.run(send(settings, "workers", items))[:-1]


def skipped_at(log: Path, topic: str, offset: int) -> bool:
    return f"skipped the record at {topic}[0]@{offset}:" in log.read_text()


def test_the_api_keeps_its_live_feed_directory_config_and_store_through_poison_records(settings: Settings, tmp_path):
    settings = settings.model_copy(update={"frames_partitions": 2})
    asyncio.run(create_topics(settings))
    log = tmp_path / "api.log"
    base = f"http://127.0.0.1:{settings.api_port}"
    with cvops(settings, "api", log) as api, httpx.Client(base_url=base, timeout=10) as client:
        procs = [(api, log)]

        def get(path: str):
            try:
                r = client.get(path)
                return r.json() if r.status_code == 200 else None
            except httpx.HTTPError:
                return None

        wait_for(lambda: get("/health/live"), "the API to answer", procs)
        events, subscribed, stop = [], threading.Event(), threading.Event()
        reader = threading.Thread(target=read_events, args=(f"{base}/api/v1/alerts/stream", events, subscribed, stop),
                                  daemon=True)  # fmt: skip
        reader.start()
        wait_for(subscribed.is_set, "the live alert stream to open", procs)

        # alerts: each poison on partition 0, then a valid alert on partition 0 and one on partition 1
        now, items, valid_ids, reasons = time.time(), [], set(), []
        for i, (value, why) in enumerate(poisons(alert("cam-p", 0, now), "window", "message")):
            items.append((value, b"cam-p", 0))
            reasons.append(why)
            for partition in (0, 1):
                good = alert(f"cam-{partition}", i, now)
                items.append((encode_record(good), good.camera_id.encode(), partition))
                valid_ids.add(good.alert_id)
        offsets = asyncio.run(send(settings, "alerts", items))
        bad_offsets = [o for o, (_, key, _) in zip(offsets, items, strict=True) if key == b"cam-p"]
        config_bad = poison_then_valid_configs(settings, updated_at=1234.0)
        workers_bad = poison_then_valid_statuses(settings, "w-after-poison")

        def live_ids():
            return {json.loads(e["data"])["alert_id"] for e in events if e.get("event") == "alert"}

        wait_for(lambda: valid_ids <= live_ids(), "every valid alert on the live stream", procs)
        stop.set()
        wait_for(lambda: (get("/api/v1/config") or {}).get("fleet"), "the valid config record", procs)
        wait_for(lambda: any(w["status"]["worker_id"] == "w-after-poison" for w in get("/api/v1/workers") or []),
                 "the valid worker status", procs)  # fmt: skip
        stored = wait_for(
            lambda: (c := get("/api/v1/counts")) and c["store_rows_written"].get("alerts", 0) >= len(valid_ids) and c,
            "the valid alerts stored", procs,
        )  # fmt: skip
        alerts_topic = settings.topic("alerts")
        letters = asyncio.run(
            dead_letters(settings, lambda ds: sum(d.source_topic == alerts_topic for d in ds) >= len(bad_offsets))
        )
        wait_for(lambda: skipped_at(log, settings.topic("config"), config_bad[0]), "the config skip logged", procs)
        wait_for(lambda: skipped_at(log, settings.topic("workers"), workers_bad[0]), "the status skip logged", procs)
        assert api.poll() is None
        assert "Traceback" not in log.read_text(), "a consumer of the API failed"
        reader.join(30)  # it sees ``stop`` at the next heartbeat

    assert live_ids() == valid_ids  # no bad alert reached a browser
    assert stored["alert_rows"] >= len(valid_ids)
    mine = {d.offset: d for d in letters if d.source_topic == settings.topic("alerts")}
    assert sorted(mine) == bad_offsets  # each bad alert dead-lettered once, by the store writer
    for offset, why, (value, _, _) in zip(bad_offsets, reasons, [i for i in items if i[1] == b"cam-p"], strict=True):
        assert mine[offset].reason in why and mine[offset].payload() == (value or b"")
    text = log.read_text()
    assert text.count("skipped the record at") <= 4, "logged once a minute at most, not once per record"


def test_a_worker_keeps_its_feedback_config_and_directory_through_poison_records(settings: Settings, tmp_path):
    settings = settings.model_copy(update={"frames_partitions": 2})
    asyncio.run(create_topics(settings))
    log = tmp_path / "worker.log"
    with cvops(settings, "worker", log) as worker:
        procs = [(worker, log)]
        assert asyncio.run(publish(settings, cameras=1, max_frames=6, fps=50.0)) == 6
        predictions = [decode_record(Prediction, r.value) for r in asyncio.run(read_topic(settings, "predictions", 6))]
        assert len(predictions) == 6, log.read_text()[-3000:]
        camera = predictions[0].camera_id
        config_bad = poison_then_valid_configs(settings, updated_at=4321.0)
        workers_bad = poison_then_valid_statuses(settings, "w-other")

        # feedback: each poison on partition 0, then a label for a frame this worker predicted (scored, no
        # dead letter) on partition 0, and a label for a frame it never saw (unknown_frame) on partition 1
        items, kinds = [], []
        template = Feedback(frame_id=predictions[0].frame_id, camera_id=camera, objects=[])
        for i, (value, why) in enumerate(poisons(template, "labelled_at", "source")):
            items.append((value, camera.encode(), 0))
            kinds.append(why)
            known = Feedback(frame_id=predictions[i % 6].frame_id, camera_id=camera, objects=[])
            items.append((encode_record(known), camera.encode(), 0))
            kinds.append(None)
            unknown = Feedback(frame_id=f"{camera}:0:{10_000 + i}", camera_id=camera, objects=[])
            items.append((encode_record(unknown), camera.encode(), 1))
            kinds.append({"unknown_frame"})
        offsets = asyncio.run(send(settings, "feedback", items))
        wanted = {(p, o): why for (_, _, p), o, why in zip(items, offsets, kinds, strict=True) if why is not None}
        topic = settings.topic("feedback")

        def from_feedback(ds):
            return {(d.partition, d.offset): d for d in ds if d.source_topic == topic}

        letters = from_feedback(asyncio.run(dead_letters(settings, lambda ds: len(from_feedback(ds)) >= len(wanted))))
        wait_for(lambda: skipped_at(log, settings.topic("config"), config_bad[0]), "the config skip logged", procs)
        wait_for(lambda: skipped_at(log, settings.topic("workers"), workers_bad[0]), "the status skip logged", procs)
        wait_for(lambda: "config fleet {'expected_fps': 7.0}" in log.read_text(), "the valid config applied", procs)
        assert worker.poll() is None

    assert set(letters) == set(wanted), "every bad label and every unknown frame dead-lettered, the known ones not"
    for position, why in wanted.items():
        assert letters[position].reason in why, (position, letters[position].reason, letters[position].detail)
    for (value, _, partition), offset in zip(items, offsets, strict=True):
        if (partition, offset) in letters:
            assert letters[(partition, offset)].payload() == (value or b"")
