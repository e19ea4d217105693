"""Poison records on every topic the store writer reads, on the real broker and a real embedded engine: each
one is dead-lettered with its reason and original bytes (or, on the dead-letter topic itself, logged with
its offset and skipped), and the valid records after it, on its partition and on the other, are stored."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from dataclasses import replace

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from core.contracts import (
    Acknowledgement,
    CameraInfo,
    CameraView,
    ContractError,
    DeadLetter,
    Evidence,
    IncidentRecord,
    ModelChange,
    decode_record,
    encode_record,
)
from core.settings import Settings
from core.topology import create_topics, spec
from store import Store
from store.dsn import masked
from store.writer import SINKS, StoreWriter
from tests.store.records import LIMITS, SETTINGS, alert, metrics, prediction, records_of, shadow_prediction

pytestmark = pytest.mark.integration

NOW = time.time() - 60
JPEG = base64.b64encode(b"\xff\xd8\xff\xdb" + b"\x00" * 16).decode()


def valid(topic: str, n: int):
    """The ``n``-th valid record of ``topic`` (camera ``cam-<n>``), and the id it is stored under."""
    cam = f"cam-{n}"
    if topic == "metrics":
        r = metrics(camera=cam, seq=n, at=NOW)
        return r, r.frame_id
    if topic == "predictions":
        r = prediction(camera=cam, seq=n, at=NOW)
        return r, r.frame_id
    if topic == "alerts":
        r = alert(camera=cam, n=n, at=NOW)
        return r, r.alert_id
    if topic == "evidence":
        r = Evidence(alert_id=f"ev-{n}", camera_id=cam, frame_id=f"{cam}:s:{n}", captured_at=NOW, width=32,
                     height=18, source_width=640, source_height=360, image_b64=JPEG)  # fmt: skip
        return r, r.alert_id
    if topic == "views":
        r = CameraView(camera_id=cam, role="latest", frame_id=f"{cam}:s:{n}", captured_at=NOW, width=32, height=18,
                       source_width=640, source_height=360, image_b64=JPEG)  # fmt: skip
        return r, r.camera_id
    if topic == "incidents":
        r = IncidentRecord(event_id=f"inc-{n}:raised", incident_id=f"inc-{n}", status="raised", kind="device",
                           scope=f"camera:{cam}", type="data_drift", signal="blur", direction="down", cameras=[cam],
                           members={f"a-{n}": cam}, changed_alert_ids=[f"a-{n}"], opened_at=NOW, summary="s",
                           changed_at=NOW)  # fmt: skip
        return r, r.event_id
    if topic == "cameras":
        r = CameraInfo(camera_id=cam, source="gateway", site="north", updated_at=NOW)
        return r, r.camera_id
    if topic == "acknowledgements":
        r = Acknowledgement(action="silence", target="camera", target_id=cam, by="ann", at=NOW, until=NOW + 60)
        return r, r.target_id
    if topic == "shadow-predictions":
        r = shadow_prediction(camera=cam, seq=n, at=NOW)
        return r, r.frame_id
    if topic == "model-changes":
        r = ModelChange(change_id=f"chg-{n}", scope=cam, action="assign", to_model="nanodet-m", to_version="1",
                        by="ann", at=NOW)  # fmt: skip
        return r, r.change_id
    r = DeadLetter.of("elsewhere", 0, 1000 + n, cam.encode(), b"junk", ContractError("corrupt_image", "test"))
    return r, r.key


IDENTITY = {"metrics": ("frame_metrics", "frame_id"), "predictions": ("predictions", "frame_id"),
            "alerts": ("alerts", "alert_id"), "evidence": ("evidence_frames", "alert_id"),
            "views": ("camera_views", "camera_id"), "deadletters": ("dead_letters", "key"),
            "incidents": ("incidents", "event_id"), "cameras": ("camera_inventory", "camera_id"),
            "acknowledgements": ("acknowledgements", "target_id"),
            "shadow-predictions": ("shadow_predictions", "frame_id"),
            "model-changes": ("model_changes", "change_id")}  # fmt: skip


def spliced(topic: str, field: str, token: str) -> bytes:
    raw = json.loads(encode_record(valid(topic, 99)[0]))
    raw[field] = "\x00marker\x00"
    return json.dumps(raw).replace('"\\u0000marker\\u0000"', token).encode()


def poisons(topic: str) -> list[tuple[bytes | None, set[str]]]:
    """(value, the reasons it may be refused with) for every kind of hostile record."""
    text = {"metrics": "model_name", "predictions": "model_name", "alerts": "message", "evidence": "reason",
            "views": "frame_id", "deadletters": "detail", "incidents": "summary", "cameras": "notes",
            "acknowledgements": "comment", "shadow-predictions": "champion_name",
            "model-changes": "comment"}[topic]  # fmt: skip
    # these have no integer: their number is a time, and a huge one no time of now
    timed = ("incidents", "cameras", "acknowledgements", "model-changes")
    number = {"metrics": "seq", "predictions": "seq", "alerts": "window", "evidence": "width", "views": "width",
              "deadletters": "offset", "incidents": "opened_at", "cameras": "updated_at",
              "acknowledgements": "at", "shadow-predictions": "seq", "model-changes": "at"}[topic]  # fmt: skip
    huge = {"out_of_range", "bad_record"} | ({"bad_timestamp"} if topic in timed else set())
    floating = {"metrics": "blur", "predictions": "processed_at", "alerts": "value", "evidence": "captured_at",
                "views": "captured_at", "deadletters": "received_at", "incidents": "resolved_at",
                "cameras": "updated_at", "acknowledgements": "until", "shadow-predictions": "processed_at",
                "model-changes": "share"}[topic]  # fmt: skip
    return [
        (spliced(topic, "extra", "[" * 20_000 + "]" * 20_000), {"too_deep"}),
        (spliced(topic, number, "7" * 5000), {"number_too_large"}),
        (spliced(topic, floating, "NaN"), {"non_finite", "bad_record"}),
        (spliced(topic, floating, "1e400"), {"non_finite", "bad_record"}),
        (spliced(topic, text, '"\\ud800"'), {"bad_json"}),
        (b"\xff\xfe{not utf-8", {"bad_json"}),
        (b"[1, 2, 3]", {"bad_record"}),
        (None, {"empty_message"}),
        (spliced(topic, number, '"seven"'), {"bad_record"}),
        (spliced(topic, number, str(2**70)), huge),
        (spliced(topic, text, json.dumps("x" * 200_000)), {"too_long", "bad_record"}),
        (spliced(topic, "schema_version", "2"), {"unknown_schema_version"}),
    ]


async def committed(settings: Settings, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                group_id=f"{settings.topic_prefix}store-writer")  # fmt: skip
    await consumer.start()
    try:
        return {tp: await consumer.committed(tp) or 0 for tp in tps}
    finally:
        await consumer.stop()


async def read_all(settings: Settings, topic: str) -> list:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    out = []
    try:
        while batch := await consumer.getmany(timeout_ms=3000):
            out += [r for records in batch.values() for r in records]
    finally:
        await consumer.stop()
    return out


class WithPassword:
    """The real store, under a DSN that holds a password, as a server's would."""

    def __init__(self, inner: Store):
        self.inner, self.dsn = inner, "https://cvops:hunter2-secret@127.0.0.1:8443/cvops"

    def insert(self, *args, **kwargs):
        self.inner.insert(*args, **kwargs)


def test_poison_records_on_every_writer_topic_are_dead_lettered_and_the_rest_is_stored(
    settings: Settings, store: Store, caplog
):
    settings = settings.model_copy(update={"store_batch_rows": 25, "store_batch_wait_ms": 50})
    topics = list(SINKS)  # every topic the writer reads, the dead-letter topic included
    sent: dict[str, list] = {}  # topic -> (partition, offset, value, reasons) of each poison
    expected: dict[str, set] = {}  # topic -> ids of the valid records

    async def main():
        await create_topics(settings)
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                    max_request_size=4 * 1024 * 1024)  # fmt: skip
        await producer.start()
        ends = {}
        for name in topics:
            topic, n = settings.topic(name), 0
            for value, reasons in poisons(name):  # each poison, then a valid record, on partition 0
                meta = await producer.send_and_wait(topic, value, key=b"cam-x", partition=0)
                sent.setdefault(name, []).append((0, meta.offset, value, reasons))
                # and valid ones after it on its partition and the other (the inventory's topic has one)
                for partition in (0, 1) if spec(settings, name).partitions > 1 else (0,):
                    record, ident = valid(name, n := n + 1)
                    meta = await producer.send_and_wait(topic, encode_record(record), key=b"cam", partition=partition)
                    expected.setdefault(name, set()).add(ident)
                    ends[TopicPartition(topic, partition)] = meta.offset + 1
        await producer.stop()
        writer = StoreWriter(settings, WithPassword(store), LIMITS)
        stop = asyncio.Event()
        task = asyncio.create_task(writer.run(stop))
        own = "SELECT source_topic, count() FROM dead_letters FINAL GROUP BY source_topic"
        wanted = {settings.topic(name): len(sent[name]) for name in topics if name != "deadletters"}
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not task.done():  # the test's records, and the writer's own letters
            progress = await committed(settings, list(ends)), dict(store.query(own))
            letters = {topic: progress[1].get(topic) for topic in wanted}
            if all(progress[0][tp] >= end for tp, end in ends.items()) and letters == wanted:
                break
            await asyncio.sleep(0.5)
        else:
            print("committed / wanted, dead letters of alerts stored:", progress, ends)
        done_early = task.done()
        stop.set()
        await asyncio.wait_for(task, 60)
        assert not done_early, "the writer stopped by itself"
        return writer, await read_all(settings, settings.topic("deadletters"))

    with caplog.at_level(logging.INFO, logger="cvops.store"):
        writer, letters = asyncio.run(main())

    for name in topics:
        table, column = IDENTITY[name]
        stored = {row[0] for row in store.query(f"SELECT {column} FROM {table}")}
        assert expected[name] <= stored, f"{name}: valid records missing from {table}: {expected[name] - stored}"

    mine = {(0, offset) for _, offset, _, _ in sent["deadletters"]}
    dead = [
        decode_record(DeadLetter, r.value) for r in letters if r.key != b"cam" and (r.partition, r.offset) not in mine
    ]
    by_position = {(d.source_topic, d.partition, d.offset): d for d in dead}
    assert len(by_position) == len(dead), "a record was dead-lettered twice"
    for name in topics:
        topic = settings.topic(name)
        for partition, offset, value, reasons in sent[name]:
            d = by_position.get((topic, partition, offset))
            if name == "deadletters":  # never dead-lettered again: logged with its offset and skipped
                assert d is None
                continue
            assert d is not None, f"no dead letter for {topic}[{partition}]@{offset}"
            assert d.reason in reasons, (name, offset, d.reason, d.detail)
            assert d.payload() == (value or b"")  # the original bytes
    assert {d.source_topic for d in dead} == {settings.topic(n) for n in topics if n != "deadletters"}
    skip_lines = [r.getMessage() for r in caplog.records if "skipped the record" in r.getMessage()]
    first = sent["deadletters"][0]
    assert skip_lines and f"{settings.topic('deadletters')}[0]@{first[1]}" in skip_lines[0]
    assert len(skip_lines) <= 2, "one line a minute at most, not one per record"  # the 2nd: a replay after a rebalance
    assert writer.skipped.total >= len(sent["deadletters"])
    # the writer's own dead letters reach the store too, once each
    for name in topics:
        if name != "deadletters":
            topic = settings.topic(name)
            rows = store.query(f"SELECT partition, offset FROM dead_letters FINAL WHERE source_topic = '{topic}'")
            assert sorted(rows) == sorted((p, o) for p, o, _, _ in sent[name]), name
    assert "hunter2-secret" not in caplog.text  # the store's DSN is logged without its password
    assert masked(WithPassword(store).dsn) in caplog.text


def test_a_record_that_fails_in_a_way_nobody_foresaw_is_its_own_dead_letter(store: Store):
    """Whatever raises while a batch is turned into columns, the batch is taken record by record: the one that
    still fails is a dead letter (processing_failed), and the others are stored as the batch would have been."""

    def flaky(alert_id: str) -> str:
        if "boom" in alert_id:
            raise ZeroDivisionError("a bug met by this record only")
        return alert_id

    w = StoreWriter(SETTINGS, store, LIMITS)
    topic = SETTINGS.topic("alerts")
    table = w.topics[topic]
    w.topics[topic] = replace(table, spec=(replace(table.spec[0], convert=flaky), *table.spec[1:]))
    batch = records_of("alerts", [alert(n=0), alert(n=1, alert_id="boom"), alert(n=2), alert(n=3)])
    tables, dead = w.to_columns(batch)
    assert [(d.reason, d.offset, d.partition) for d in dead] == [("processing_failed", 0, 1)]
    assert "ZeroDivisionError" in dead[0].detail and dead[0].payload() == batch[1].value
    assert tables["alerts"].rows == 3
    assert [row[0] for row in tables["alerts"].as_rows()] == ["cam-1-a0", "cam-1-a2", "cam-1-a3"]
    # a bad record of the dead-letter topic is skipped, not dead-lettered again
    letters = records_of("deadletters", [b"[" * 10_000, valid("deadletters", 1)[0]])
    tables, dead = w.to_columns(letters)
    assert dead == [] and tables["dead_letters"].rows == 1 and w.skipped.total == 1
