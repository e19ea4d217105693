"""The store writer: predictions, metrics, alerts and dead letters from Kafka into ClickHouse.

Batches by rows and time (``store_batch_rows``, ``store_batch_wait_ms``) and inserts each table's rows
column by column.

Loses nothing: a batch's offsets are committed only after its rows are inserted. When an insert fails
the writer retries with backoff and reads nothing more meanwhile (backpressure: it pauses its partitions
and the records wait in Kafka, not in memory; it keeps polling so that it stays in its consumer group).

Doubles nothing: each insert carries a deduplication token made of the Kafka offsets it holds, so a batch
replayed after a crash (or retried after an acknowledgement that was lost) is dropped whole by ClickHouse,
materialized views included; and a record replayed in a differently cut batch lands on the same sorting
key of a ReplacingMergeTree table and collapses into one row (see :mod:`store.schema`).

A record that breaks its contract, or that the store cannot hold as it is (NaN, negative sizes,
timestamps far from now: :mod:`store.validate`), goes to the dead-letter topic with the reason, never
coerced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import CommitFailedError
from aiokafka.structs import TopicPartition
from pydantic import ValidationError

from store.client import Store
from store.settings import StoreSettings
from store.validate import Limits, check
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
from streams.kafka_security import client_options

log = logging.getLogger("cvops.store")


def _ts(unix_s: float) -> int:
    """Unix seconds as the ticks of a ``DateTime64(3)`` column (ms), which clickhouse-connect sends as is."""
    return round(unix_s * 1000)


def metrics_row(m: FrameMetrics) -> tuple:
    return (
        m.frame_id, m.camera_id, m.seq, _ts(m.captured_at), _ts(m.processed_at), m.model_name,
        m.model_version, m.encoding, m.bytes, m.width, m.height, m.aspect_ratio, m.brightness, m.blur,
        m.inference_ms, m.detections, m.contrast, m.saturation, m.under_exposed, m.over_exposed, m.frame_diff,
        m.black, m.mean_confidence,
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
         "bytes", "width", "height", "aspect_ratio", "brightness", "blur", "inference_ms", "detections",
         "contrast", "saturation", "under_exposed", "over_exposed", "frame_diff", "black", "mean_confidence"),
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

    def __init__(self, settings: Settings, store: Store, limits: Limits | None = None):
        self.settings = settings
        self.store = store
        self.limits = limits or _limits_from_env()
        self.topics = {settings.topic(name): sink for name, sink in SINKS.items()}
        self.rows_written: dict[str, int] = defaultdict(int)
        self.rejected = 0
        self.failed_inserts = 0
        self.last_commit: float | None = None
        self._held: list = []  # records fetched while paused for backpressure, processed next

    def to_rows(self, records, now: float | None = None) -> tuple[dict[str, list[tuple]], list[DeadLetter]]:
        """Group consumed records into rows per table; records that break their contract, or that the store
        cannot hold (:func:`store.validate.check`), become dead letters."""
        now = time.time() if now is None else now
        rows: dict[str, list[tuple]] = defaultdict(list)
        dead = []
        for r in records:
            sink = self.topics[r.topic]
            try:
                record = check(_decode(sink.contract, r.value), now, self.limits)
                rows[sink.table].append(sink.row(record))
            except ContractError as exc:
                dead.append(DeadLetter.of(r.topic, r.partition, r.offset, r.key, r.value, exc))
        return rows, dead

    def tokens(self, records, dead: list[DeadLetter] = ()) -> dict[str, str]:
        """Per table, an insert deduplication token naming the Kafka offsets its rows come from.

        The same records give the same token, so ClickHouse drops a replayed batch (see :mod:`store.schema`).
        """
        rejected = {(d.source_topic, d.partition, d.offset) for d in dead}
        spans: dict[str, dict[int, list[int]]] = defaultdict(dict)
        for r in records:
            if (r.topic, r.partition, r.offset) in rejected:
                continue
            table = self.topics[r.topic].table
            span = spans[table].setdefault(r.partition, [r.offset, r.offset, 0])
            span[0], span[1], span[2] = min(span[0], r.offset), max(span[1], r.offset), span[2] + 1
        topic_of = {s.table: t for t, s in self.topics.items()}
        return {
            table: f"{topic_of[table]}|" + ",".join(f"{p}:{lo}-{hi}#{n}" for p, (lo, hi, n) in sorted(parts.items()))
            for table, parts in spans.items()
        }

    async def insert(
        self,
        rows: dict[str, list[tuple]],
        stop: asyncio.Event,
        tokens: dict[str, str] | None = None,
        idle: Callable | None = None,
    ) -> bool:
        """Insert every table's rows, retrying with backoff until it works; False if stopped first.

        Between tries it awaits ``idle(seconds)`` (default: sleep), which the consumer loop uses to keep its
        group membership while its partitions are paused.
        """
        loop = asyncio.get_running_loop()
        columns = {s.table: s.columns for s in SINKS.values()}
        pending = {table: table_rows for table, table_rows in rows.items() if table_rows}
        tokens = tokens or {}
        delay = 0.5
        while pending:
            table, table_rows = next(iter(pending.items()))
            settings = {"insert_deduplication_token": tokens[table]} if table in tokens else None
            try:
                await loop.run_in_executor(None, self._insert_columns, table, table_rows, columns[table], settings)
            except Exception as exc:
                self.failed_inserts += 1
                log.warning(
                    "insert of %d rows into %s failed (%s); retrying in %.1f s", len(table_rows), table, exc, delay
                )
                if stop.is_set():
                    return False
                if idle is not None:
                    await idle(delay)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    return False
                delay = min(delay * 2, 30.0)
                continue
            self.rows_written[table] += len(table_rows)
            del pending[table]
        return True

    def _insert_columns(self, table: str, rows: list[tuple], columns: tuple[str, ...], settings: dict | None) -> None:
        self.store.insert(table, list(zip(*rows, strict=True)), columns, column_oriented=True, settings=settings)

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        consumer = AIOKafkaConsumer(
            *self.topics,
            **client_options(s),
            group_id=f"{s.topic_prefix}store-writer",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=s.store_batch_rows,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        producer = AIOKafkaProducer(**client_options(s), acks="all", enable_idempotence=True)
        await consumer.start()
        try:
            await producer.start()
            log.info("store writer consuming %s into %s", ", ".join(self.topics), getattr(self.store, "dsn", "?"))
            await self.consume(consumer, producer, stop)
        finally:
            await consumer.stop()
            await producer.stop()

    async def consume(self, consumer, producer, stop: asyncio.Event) -> None:
        """The loop: read a batch, insert it (retrying), publish its dead letters, then commit its offsets.

        Two batches overlap: while batch N is inserted (in a thread: the engine works without the GIL),
        batch N+1 is read and parsed. Batch N+1 is inserted only after batch N is stored and committed,
        and each commit names its own batch's offsets, so a commit never covers a row not yet stored;
        while the store is down, at most that one parsed batch waits in memory.

        ``consumer`` and ``producer`` are started aiokafka clients, or anything with the same methods
        (``getmany``, ``commit``, ``pause``, ``resume``, ``assignment``; ``send``): the tests use fakes.
        """
        s = self.settings
        polling = asyncio.Lock()  # the reading loop and a retrying insert both poll; one at a time

        async def idle(seconds: float) -> None:
            # Paused partitions return nothing, but polling keeps this consumer in its group (a consumer
            # that stops polling for max_poll_interval_ms is dropped and its partitions move).
            deadline = time.monotonic() + seconds
            while not stop.is_set() and time.monotonic() < deadline:
                async with polling:
                    consumer.pause(*consumer.assignment())  # partitions assigned meanwhile stay still too
                    wait_ms = max(1, int(min(0.5, deadline - time.monotonic()) * 1000))
                    for batch in (await consumer.getmany(timeout_ms=wait_ms)).values():
                        self._held.extend(batch)

        async def store(records: list, rows: dict[str, list[tuple]], dead: list[DeadLetter]) -> bool:
            try:
                stored = await self.insert(rows, stop, self.tokens(records, dead), idle)
            finally:
                consumer.resume(*consumer.assignment())
            if not stored:
                return False  # stopped while the store was down: nothing committed, the batch will be replayed
            if dead:
                self.rejected += len(dead)
                sends = [await producer.send(s.topic("deadletters"), encode_record(d), key=r_key(d)) for d in dead]
                await asyncio.gather(*sends)
            try:
                await consumer.commit(next_offsets(records))
                self.last_commit = time.time()
            except CommitFailedError as exc:  # a rebalance took the partitions: they will be replayed
                log.warning("commit failed after a rebalance, records will be replayed: %s", exc)
            return True

        inflight: asyncio.Task | None = None
        try:
            while not stop.is_set():
                records = await self._next_batch(consumer, stop, polling)
                parsed = self.to_rows(records) if records else None  # meanwhile the previous batch inserts
                if inflight is not None:
                    task, inflight = inflight, None
                    if not await task:
                        break
                if parsed is not None and not stop.is_set():
                    inflight = asyncio.create_task(store(records, *parsed))
        finally:
            if inflight is not None:
                await inflight

    async def _next_batch(self, consumer, stop: asyncio.Event, polling: asyncio.Lock | None = None) -> list:
        """Up to ``store_batch_rows`` records, waiting at most ``store_batch_wait_ms`` after the first."""
        s = self.settings
        polling = polling or asyncio.Lock()
        records, self._held = self._held, []
        deadline = time.monotonic() + s.store_batch_wait_ms / 1000 if records else None
        while len(records) < s.store_batch_rows and not stop.is_set():
            timeout = 500 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            async with polling:
                got = await consumer.getmany(timeout_ms=timeout, max_records=s.store_batch_rows - len(records))
            for batch in got.values():
                records.extend(batch)
            if records and deadline is None:
                deadline = time.monotonic() + s.store_batch_wait_ms / 1000
            if deadline is not None and time.monotonic() >= deadline:
                break
        return records


def next_offsets(records) -> dict[TopicPartition, int]:
    """The offsets to commit once ``records`` are stored: one past the last record of each partition."""
    out: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        out[tp] = max(out.get(tp, 0), r.offset + 1)
    return out


def _decode(contract: type, value: bytes):
    """:func:`streams.contracts.decode_record`, faster on the common path: pydantic parses the JSON itself
    (about twice as fast as ``json.loads`` then validation). Anything it refuses, or a record without an
    explicit ``schema_version``, goes through ``decode_record`` for the exact same verdict and reason."""
    try:
        record = contract.model_validate_json(value)
    except (ValidationError, ValueError, TypeError):
        return decode_record(contract, value)
    if "schema_version" not in record.model_fields_set:
        return decode_record(contract, value)
    return record


def _limits_from_env() -> Limits:
    st = StoreSettings()
    return Limits(max_future_s=st.store_max_future_s, max_age_s=st.store_max_age_days * 86400)


def r_key(d: DeadLetter) -> bytes | None:
    return d.key.encode() if d.key is not None else None
