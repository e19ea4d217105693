"""The store writer: predictions, metrics, alerts and dead letters from Kafka into ClickHouse.

Loses nothing: a batch's offsets are committed only after its rows are inserted. When an insert fails
the writer retries with backoff and reads nothing more meanwhile (backpressure: the records wait in
Kafka, not in memory). Doubles nothing: a record replayed after a crash lands on the same sorting key
of a ReplacingMergeTree table and collapses into one row (see :mod:`store.schema`). A record that breaks
its contract goes to the dead-letter topic with the reason, never coerced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import CommitFailedError

from store.client import Store
from streams.config import Settings
from streams.contracts import (
    Alert,
    ContractError,
    DeadLetter,
    FrameMetrics,
    Prediction,
    decode_record,
    encode_record,
)

log = logging.getLogger("cvops.store")


def _ts(unix_s: float) -> datetime:
    return datetime.fromtimestamp(unix_s, tz=UTC)


def metrics_row(m: FrameMetrics) -> tuple:
    return (
        m.frame_id, m.camera_id, m.seq, _ts(m.captured_at), _ts(m.processed_at), m.model_name,
        m.model_version, m.encoding, m.bytes, m.width, m.height, m.aspect_ratio, m.brightness, m.blur,
        m.inference_ms, m.detections,
    )  # fmt: skip


def prediction_row(p: Prediction) -> tuple:
    d, t = p.detections, p.timings
    return (
        p.frame_id, p.camera_id, p.seq, _ts(p.captured_at), _ts(p.processed_at), p.model_name,
        p.model_version, p.width, p.height, p.batch_size, t.queue_ms, t.decode_ms, t.preprocess_ms,
        t.inference_ms, t.postprocess_ms, [x.label for x in d], [x.class_id for x in d],
        [x.score for x in d], [x.box[0] for x in d], [x.box[1] for x in d], [x.box[2] for x in d],
        [x.box[3] for x in d],
    )  # fmt: skip


def alert_row(a: Alert) -> tuple:
    return (
        a.alert_id, a.status, a.type, a.severity, a.camera_id, a.signal, a.value, a.threshold, a.window,
        a.model_name, a.model_version, a.evidence_frame_ids, _ts(a.raised_at), a.message,
    )  # fmt: skip


def dead_letter_row(d: DeadLetter) -> tuple:
    return (
        d.source_topic, d.partition, d.offset, d.key or "", d.reason, d.detail,
        len(d.payload_b64) * 3 // 4, _ts(d.received_at),
    )  # fmt: skip


@dataclass(frozen=True)
class Sink:
    table: str
    contract: type
    row: Callable
    columns: tuple[str, ...]


SINKS = {
    "metrics": Sink(
        "frame_metrics", FrameMetrics, metrics_row,
        ("frame_id", "camera_id", "seq", "captured_at", "processed_at", "model_name", "model_version", "encoding",
         "bytes", "width", "height", "aspect_ratio", "brightness", "blur", "inference_ms", "detections"),
    ),
    "predictions": Sink(
        "predictions", Prediction, prediction_row,
        ("frame_id", "camera_id", "seq", "captured_at", "processed_at", "model_name", "model_version", "width",
         "height", "batch_size", "queue_ms", "decode_ms", "preprocess_ms", "inference_ms", "postprocess_ms",
         "detections.label", "detections.class_id", "detections.score", "detections.x1", "detections.y1",
         "detections.x2", "detections.y2"),
    ),
    "alerts": Sink(
        "alerts", Alert, alert_row,
        ("alert_id", "status", "type", "severity", "camera_id", "signal", "value", "threshold", "window",
         "model_name", "model_version", "evidence_frame_ids", "raised_at", "message"),
    ),
    "deadletters": Sink(
        "dead_letters", DeadLetter, dead_letter_row,
        ("source_topic", "partition", "offset", "key", "reason", "detail", "payload_bytes", "received_at"),
    ),
}  # fmt: skip


class StoreWriter:
    """Consume the record topics and insert them, batch by batch; see the module docstring."""

    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.store = store
        self.topics = {settings.topic(name): sink for name, sink in SINKS.items()}
        self.rows_written: dict[str, int] = defaultdict(int)
        self.rejected = 0
        self.failed_inserts = 0
        self.last_commit: float | None = None

    def to_rows(self, records) -> tuple[dict[str, list[tuple]], list[DeadLetter]]:
        """Group consumed records into rows per table; records that break their contract become dead letters."""
        rows: dict[str, list[tuple]] = defaultdict(list)
        dead = []
        for r in records:
            sink = self.topics[r.topic]
            try:
                rows[sink.table].append(sink.row(decode_record(sink.contract, r.value)))
            except ContractError as exc:
                dead.append(DeadLetter.of(r.topic, r.partition, r.offset, r.key, r.value, exc))
        return rows, dead

    async def insert(self, rows: dict[str, list[tuple]], stop: asyncio.Event) -> bool:
        """Insert every table's rows, retrying with backoff until it works; False if stopped first."""
        loop = asyncio.get_running_loop()
        columns = {s.table: s.columns for s in SINKS.values()}
        pending = dict(rows)
        delay = 0.5
        while pending:
            table, table_rows = next(iter(pending.items()))
            try:
                await loop.run_in_executor(None, self.store.insert, table, table_rows, columns[table])
            except Exception as exc:
                self.failed_inserts += 1
                log.warning(
                    "insert of %d rows into %s failed (%s); retrying in %.1f s", len(table_rows), table, exc, delay
                )
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    return False
                except TimeoutError:
                    delay = min(delay * 2, 30.0)
                    continue
            self.rows_written[table] += len(table_rows)
            del pending[table]
        return True

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=s.kafka_bootstrap,
            group_id=f"{s.topic_prefix}store-writer",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=s.store_batch_rows,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all", enable_idempotence=True)
        await consumer.start()
        await producer.start()
        log.info("store writer consuming %s into %s", ", ".join(self.topics), self.store.dsn)
        try:
            while not stop.is_set():
                records = await self._next_batch(consumer, stop)
                if not records:
                    continue
                rows, dead = self.to_rows(records)
                if not await self.insert(rows, stop):
                    break  # stopped while the store was down: nothing committed, the batch will be replayed
                if dead:
                    self.rejected += len(dead)
                    sends = [await producer.send(s.topic("deadletters"), encode_record(d), key=r_key(d)) for d in dead]
                    await asyncio.gather(*sends)
                try:
                    await consumer.commit()
                    self.last_commit = time.time()
                except CommitFailedError as exc:  # a rebalance took the partitions: they will be replayed
                    log.warning("commit failed after a rebalance, records will be replayed: %s", exc)
        finally:
            await consumer.stop()
            await producer.stop()

    async def _next_batch(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> list:
        """Up to ``store_batch_rows`` records, waiting at most ``store_batch_wait_ms`` after the first."""
        s = self.settings
        records: list = []
        deadline = None
        while len(records) < s.store_batch_rows and not stop.is_set():
            timeout = 500 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            got = await consumer.getmany(timeout_ms=timeout, max_records=s.store_batch_rows - len(records))
            for batch in got.values():
                records.extend(batch)
            if records and deadline is None:
                deadline = time.monotonic() + s.store_batch_wait_ms / 1000
            if deadline is not None and time.monotonic() >= deadline:
                break
        return records


def r_key(d: DeadLetter) -> bytes | None:
    return d.key.encode() if d.key is not None else None
