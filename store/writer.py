"""The store writer: predictions, metrics, alerts and dead letters from Kafka into ClickHouse.

Batches by rows and time (``store_batch_rows``, ``store_batch_wait_ms``) and inserts each table's rows
column by column, on an insert thread of its own (:meth:`StoreWriter.consume`).

Loses nothing: a batch's offsets are committed only after its rows are inserted. When an insert fails
the writer retries with backoff and reads nothing more meanwhile (backpressure: it pauses its partitions
and the records wait in Kafka, not in memory; it keeps polling so that it stays in its consumer group).

Doubles nothing: each insert carries a deduplication token made of the Kafka offsets it holds, so a batch
replayed after a crash (or retried after an acknowledgement that was lost) is dropped whole by ClickHouse,
materialized views included; and a record replayed in a differently cut batch lands on the same sorting
key of a ReplacingMergeTree table and collapses into one row (see :mod:`store.schema`).

A record that breaks its contract, or that the store cannot hold as it is (NaN, negative sizes,
timestamps far from now, text too long: :mod:`store.validate`), goes to the dead-letter topic with the reason,
never coerced. So does one that fails in a way nobody foresaw (reason ``processing_failed``): a record's failure
is that record's dead letter, never the writer's stop. A bad record on the dead-letter topic itself cannot be
dead-lettered again: it is logged with its offset (:class:`core.skips.SkipLog`) and skipped.

Parsing is the writer's own cost, so a batch takes a fast path that reaches the same verdicts: each record is
decoded by msgspec into a struct derived from its pydantic contract (same fields, types, bounds and defaults,
plus the store's ranges; stricter, never laxer: no NaN, no "5" for 5), then the batch is checked column by column
(:func:`store.validate.suspects`) and its columns are built straight from the structs. A record msgspec
refuses, or that the column checks name, goes through the contract and :func:`store.validate.check` one by
one, which decide and give the reason; the others are exactly the records those would accept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import types
import typing
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from operator import attrgetter

import annotated_types
import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import CommitFailedError
from aiokafka.structs import TopicPartition
from pydantic import BaseModel

from core.contracts import ContractError, DeadLetter, decode_record, encode_record
from core.kafka import client_options
from core.settings import Settings
from core.skips import SkipLog
from store.client import Store
from store.dsn import masked
from store.settings import StoreSettings
from store.tables import (
    ALERTS,
    CAMERA_VIEWS,
    DEAD_LETTERS,
    EVIDENCE_FRAMES,
    FRAME_METRICS,
    PREDICTIONS,
    TABLES,
    Fields,
    Table,
)
from store.validate import Limits, check, ranges, suspects

log = logging.getLogger("cvops.store")


@dataclass(frozen=True)
class Columns:
    """One table's rows as columns, in its column order (:attr:`store.tables.Table.columns`), ready for a
    columnar insert."""

    data: list[list]
    rows: int

    def __len__(self) -> int:
        return self.rows

    def as_rows(self) -> list[tuple]:
        return list(zip(*self.data, strict=True))


class _Unsupported(Exception):
    pass


_CONSTRAINTS = {
    annotated_types.Gt: "gt",
    annotated_types.Ge: "ge",
    annotated_types.Lt: "lt",
    annotated_types.Le: "le",
    annotated_types.MinLen: "min_length",
    annotated_types.MaxLen: "max_length",
}


_INT64 = (-(2**63), 2**63 - 1)


def _fast_type(annotation, metadata=(), store_range: tuple[float, float] | None = None):
    """The msgspec type of a pydantic field: same type, same bounds, and within ``store_range`` (the store's
    :func:`store.validate.ranges`) too where given; _Unsupported for anything else."""
    meta: dict[str, float] = {}
    for m in metadata:
        if type(m) not in _CONSTRAINTS:
            raise _Unsupported(f"constraint {m!r}")
        key = _CONSTRAINTS[type(m)]
        meta[key] = getattr(m, key)
    if store_range is not None:
        meta = _tightest(meta, *store_range)
    if annotation is int and any(not _INT64[0] <= v <= _INT64[1] for k, v in meta.items() if k in _BOUND_KEYS):
        raise _Unsupported(f"int bounds {meta} beyond int64")
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    plain = annotation in (int, float, str, bool)
    if plain or (origin is typing.Literal and all(type(a) in (int, str) for a in args)):
        fast = annotation
    elif origin in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        inner = args[0] if args[1] is type(None) else args[1]
        return typing.Optional[_fast_type(inner, metadata)]  # noqa: UP045 (built at run time)
    elif origin is list and len(args) == 1:
        fast = list[_fast_type(args[0])]
    elif origin is tuple and args and Ellipsis not in args:
        fast = tuple.__class_getitem__(tuple(_fast_type(a) for a in args))
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        fast = _fast_struct(annotation)
    else:
        raise _Unsupported(f"type {annotation!r}")
    return typing.Annotated[fast, msgspec.Meta(**meta)] if meta else fast


_BOUND_KEYS = ("gt", "ge", "lt", "le")


def _tightest(meta: dict, low: float, high: float) -> dict:
    """``meta``'s bounds narrowed to [low, high]: msgspec takes one lower and one upper bound per type."""
    lows = [(v, k == "gt") for k, v in meta.items() if k in ("gt", "ge")] + [(low, False)]
    highs = [(v, k == "lt") for k, v in meta.items() if k in ("lt", "le")] + [(high, False)]
    low_v, low_strict = max(lows)  # the larger bound; on a tie the strict one
    high_v, high_not_strict = min((v, not strict) for v, strict in highs)
    out = {k: v for k, v in meta.items() if k not in _BOUND_KEYS}
    out["gt" if low_strict else "ge"] = low_v
    out["le" if high_not_strict else "lt"] = high_v
    return out


def _fast_struct(model: type[BaseModel], store_ranges: dict[str, tuple[float, float]] | None = None):
    """A msgspec struct with the fields, types, bounds and defaults of ``model``, which must forbid extra fields
    and have no validators; numeric fields of ``store_ranges`` are bounded by those too. Its ``schema_version``
    (if any) has no default: a record that leaves it out takes the contract's path, as :func:`_decode` wants."""
    config = dict(model.model_config)
    decorators = model.__pydantic_decorators__
    if config.pop("extra", None) != "forbid" or set(config) - {"frozen"}:
        raise _Unsupported(f"{model.__name__} config {model.model_config}")
    if any((decorators.validators, decorators.field_validators, decorators.root_validators,
            decorators.model_validators)):  # fmt: skip
        raise _Unsupported(f"{model.__name__} has validators")
    fields = []
    for name, info in model.model_fields.items():
        fast = _fast_type(info.annotation, info.metadata, (store_ranges or {}).get(name))
        if info.is_required() or name == "schema_version":
            fields.append((name, fast))
        elif info.default_factory is not None:
            fields.append((name, fast, msgspec.field(default_factory=info.default_factory)))
        else:
            fields.append((name, fast, info.default))
    # gc=False: a decoded record holds no reference cycle, and thousands of untracked structs per batch spare
    # the garbage collector's passes.
    return msgspec.defstruct(f"Fast{model.__name__}", fields, kw_only=True, forbid_unknown_fields=True, gc=False)


@dataclass(frozen=True)
class FastDecoder:
    """``decode(value)``: the record as a struct with the contract's fields, or an exception when msgspec
    refuses it (the contract then decides). ``in_range``: the fields whose store ranges it checks as well."""

    decode: Callable[[bytes], object]
    in_range: frozenset[str]


def fast_decoder(contract: type[BaseModel]) -> FastDecoder | None:
    """The contract's :class:`FastDecoder`; None when the contract has something msgspec cannot mirror."""
    bounded = {}
    for name, (low, high) in ranges(contract).items():  # a range msgspec cannot hold stays with the checks
        try:
            _fast_type(contract.model_fields[name].annotation, contract.model_fields[name].metadata, (low, high))
            bounded[name] = (low, high)
        except _Unsupported:
            continue
    try:
        return FastDecoder(msgspec.json.Decoder(_fast_struct(contract, bounded)).decode, frozenset(bounded))
    except _Unsupported as exc:
        log.warning("no fast decoder for %s (%s): records take the contract's path", contract.__name__, exc)
        return None


# The tables by topic, each declared once in :mod:`store.tables`; one record's row, for tests and tools.
SINKS = {table.topic: table for table in TABLES}
metrics_row, prediction_row, alert_row = FRAME_METRICS.row, PREDICTIONS.row, ALERTS.row
dead_letter_row, evidence_row, view_row = DEAD_LETTERS.row, EVIDENCE_FRAMES.row, CAMERA_VIEWS.row

_FAST = {sink.contract: fast_decoder(sink.contract) if sink.fast_path else None for sink in SINKS.values()}


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
        self._inserts: ThreadPoolExecutor | None = None  # the insert thread, while :meth:`consume` runs
        self.skipped = SkipLog(log)  # bad records of the dead-letter topic: logged, not dead-lettered again

    def to_columns(self, records, now: float | None = None) -> tuple[dict[str, Columns], list[DeadLetter]]:
        """Group consumed records into columns per table; records that break their contract, or that the store
        cannot hold (:func:`store.validate.check`), become dead letters, in the order of ``records`` (those of
        the dead-letter topic are skipped and logged instead).

        Should the batch fail as a whole in a way nobody foresaw, each record is taken alone, and one that still
        fails is a dead letter with reason ``processing_failed``: the others are stored.
        """
        try:
            return self._to_columns(records, now)
        except Exception as exc:
            log.warning("a batch of %d records failed (%s: %s); taking them one by one", len(records),
                        type(exc).__name__, exc)  # fmt: skip
        tables: dict[str, list[list]] = {}
        counts: dict[str, int] = defaultdict(int)
        dead: list[DeadLetter] = []
        for r in records:
            try:
                one, one_dead = self._to_columns([r], now)
            except Exception as exc:
                self._reject(r, _failure(exc), dead)
                continue
            dead += one_dead
            for table, columns in one.items():
                merged = tables.setdefault(table, [[] for _ in columns.data])
                for into, column in zip(merged, columns.data, strict=True):
                    into.extend(column)
                counts[table] += columns.rows
        return {table: Columns(data, counts[table]) for table, data in tables.items()}, dead

    def _reject(self, record, exc: ContractError, dead: list) -> None:
        """``record`` refused for ``exc``: a dead letter, or, for a record of the dead-letter topic, a skip."""
        if self.topics[record.topic].contract is DeadLetter:
            self.skipped.skip(record, exc)
        else:
            dead.append(DeadLetter.of(record.topic, record.partition, record.offset, record.key, record.value, exc))

    def _to_columns(self, records, now: float | None = None) -> tuple[dict[str, Columns], list[DeadLetter]]:
        """:meth:`to_columns` of the whole batch at once.

        The fast path (see the module docstring): msgspec decodes each record, :func:`store.validate.suspects`
        checks the batch column by column, and only the records either refuses go through the contract and
        :func:`store.validate.check`, which accept them or give the reason.
        """
        now = time.time() if now is None else now
        topics = list(map(_TOPIC, records))
        by_topic: dict[str, list[int]] = defaultdict(list)
        if len(set(topics)) == 1:
            by_topic[topics[0]] = list(range(len(records)))
        else:
            for i, topic in enumerate(topics):
                by_topic[topic].append(i)
        tables: dict[str, Columns] = {}
        dead: list[tuple[int, DeadLetter]] = []

        def checked(sink: Table, i: int):
            """The record at ``i`` through its contract and the store check: the model, or None (refused)."""
            r = records[i]
            try:
                return check(_decode(sink.contract, r.value), now, self.limits)
            except Exception as exc:
                refused: list[DeadLetter] = []
                self._reject(r, exc if isinstance(exc, ContractError) else _failure(exc), refused)
                dead.extend((i, d) for d in refused)
                return None

        for topic, where in by_topic.items():
            sink = self.topics[topic]
            fast = _FAST[sink.contract]
            decode = fast.decode if fast is not None else None
            items: list = []
            try:
                if decode is None:
                    raise _Unsupported(sink.contract.__name__)
                items = list(map(decode, map(_VALUE, map(records.__getitem__, where))))
            except Exception:  # anything msgspec refuses: record by record, the contract decides the rest
                items, kept = [], []
                for i in where:
                    item = None
                    if decode is not None:
                        with contextlib.suppress(Exception):
                            item = decode(records[i].value)
                    if item is None:
                        item = checked(sink, i)
                    if item is not None:
                        items.append(item)
                        kept.append(i)
                where = kept
            fields = Fields(items)
            in_range = fast.in_range if fast is not None else ()
            try:
                suspect = suspects(sink.contract, fields.__getitem__, now, self.limits, in_range) if items else ()
            except Exception:  # a value the column checks choke on: every record is checked on its own
                suspect = set(range(len(items)))
            if suspect:
                items, kept = [], []
                for j, (item, i) in enumerate(zip(fields.items, where, strict=True)):
                    if j in suspect:
                        item = checked(sink, i)
                    if item is not None:
                        items.append(item)
                        kept.append(i)
                where, fields = kept, Fields(items)
            if items:
                tables[sink.table] = Columns(sink.columns_of(fields), len(items))
        dead.sort(key=lambda d: d[0])
        return tables, [d for _, d in dead]

    def to_rows(self, records, now: float | None = None) -> tuple[dict[str, list[tuple]], list[DeadLetter]]:
        """:meth:`to_columns` as rows: per table, one tuple per record in its sink's column order."""
        tables, dead = self.to_columns(records, now)
        return {table: columns.as_rows() for table, columns in tables.items()}, dead

    def tokens(self, records, dead: list[DeadLetter] = (), offsets: dict | None = None) -> dict[str, str]:
        """Per table, an insert deduplication token naming the Kafka offsets its rows come from.

        The same records give the same token, so ClickHouse drops a replayed batch (see :mod:`store.schema`).
        ``offsets``: ``_offsets_by_partition(records)`` when the caller has it already.
        """
        rejected = {(d.source_topic, d.partition, d.offset) for d in dead}
        offsets = _offsets_by_partition(records) if offsets is None else offsets
        spans: dict[str, dict[int, tuple[int, int, int]]] = defaultdict(dict)
        for (topic, partition), kept in offsets.items():
            if rejected:
                kept = [o for o in kept if (topic, partition, o) not in rejected]
            if kept:
                spans[self.topics[topic].table][partition] = (min(kept), max(kept), len(kept))
        topic_of = {s.table: t for t, s in self.topics.items()}
        return {
            table: f"{topic_of[table]}|" + ",".join(f"{p}:{lo}-{hi}#{n}" for p, (lo, hi, n) in sorted(parts.items()))
            for table, parts in spans.items()
        }

    async def insert(
        self,
        rows: dict[str, Columns | list[tuple]],
        stop: asyncio.Event,
        tokens: dict[str, str] | None = None,
        idle: Callable | None = None,
    ) -> bool:
        """Insert every table's rows (:class:`Columns`, or tuples), retrying with backoff until it works; False if
        stopped first.

        Between tries it awaits ``idle(seconds)`` (default: sleep), which the consumer loop uses to keep its
        group membership while its partitions are paused.
        """
        loop = asyncio.get_running_loop()
        tables = {s.table: s for s in SINKS.values()}
        pending = {table: table_rows for table, table_rows in rows.items() if table_rows}
        tokens = tokens or {}
        delay = 0.5
        while pending:
            table, table_rows = next(iter(pending.items()))
            settings = {"insert_deduplication_token": tokens[table]} if table in tokens else None
            try:
                await loop.run_in_executor(self._inserts, self._insert_columns, tables[table], table_rows, settings)
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

    def _insert_columns(self, table: Table, rows: Columns | list[tuple], settings: dict | None) -> None:
        """One insert, columnar, with the column types of the table's declaration (no query to describe it)."""
        data = rows.data if isinstance(rows, Columns) else list(zip(*rows, strict=True))
        self.store.insert(
            table.name, data, table.columns, column_oriented=True, settings=settings, column_types=table.types
        )

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
        # A dead letter carries its record whole, in base64: up to the dead-letter topic's own size limit.
        producer = AIOKafkaProducer(
            **client_options(s), acks="all", enable_idempotence=True, max_request_size=s.max_message_bytes * 2
        )
        await consumer.start()
        try:
            await producer.start()
            dsn = getattr(self.store, "dsn", None)
            log.info("store writer consuming %s into %s", ", ".join(self.topics), masked(dsn) if dsn else "?")
            await self.consume(consumer, producer, stop)
        finally:
            await consumer.stop()
            await producer.stop()

    async def consume(self, consumer, producer, stop: asyncio.Event) -> None:
        """The loop: read a batch, insert it (retrying), publish its dead letters, then commit its offsets.

        Two batches are in hand at once: batch N's insert runs on the writer's own insert thread while batch
        N+1 is read (the insert starts when the loop next waits, for a fetch or for the insert itself). Batch N+1
        is inserted only after batch N is stored, its dead letters acknowledged and its offsets committed, and
        each commit names its own batch's offsets, so a commit never covers a row not yet stored; while the store
        is down, at most that one parsed batch waits in memory.

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

        async def store(records: list, rows: dict[str, Columns], dead: list[DeadLetter]) -> bool:
            offsets = _offsets_by_partition(records)
            try:
                stored = await self.insert(rows, stop, self.tokens(records, dead, offsets), idle)
            finally:
                consumer.resume(*consumer.assignment())
            if not stored:
                return False  # stopped while the store was down: nothing committed, the batch will be replayed
            if dead:
                self.rejected += len(dead)
                sends = [await producer.send(s.topic("deadletters"), encode_record(d), key=r_key(d)) for d in dead]
                await asyncio.gather(*sends)
            try:
                await consumer.commit(next_offsets(records, offsets))
                self.last_commit = time.time()
            except CommitFailedError as exc:  # a rebalance took the partitions: they will be replayed
                log.warning("commit failed after a rebalance, records will be replayed: %s", exc)
            return True

        inflight: asyncio.Task | None = None
        self._inserts = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-insert")
        try:
            while not stop.is_set():
                records = await self._next_batch(consumer, stop, polling)
                parsed = self.to_columns(records) if records else None  # meanwhile the previous batch inserts
                if inflight is not None:
                    task, inflight = inflight, None
                    if not await task:
                        break
                if parsed is not None and not stop.is_set():
                    # Not forced to start before the next batch is parsed (it starts when the loop next waits:
                    # for a fetch, or for this task): on 2 shared cores the engine's insert already keeps more
                    # than one core busy, and forcing the overlap measured no faster on a quiet machine and
                    # about a tenth slower on a loaded one (docs/store.md).
                    inflight = asyncio.create_task(store(records, *parsed))
        finally:
            try:
                if inflight is not None:
                    await inflight
            finally:
                inserts, self._inserts = self._inserts, None
                inserts.shutdown(wait=False)  # idle by now; not waited on, should a cancelled insert still run

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


def next_offsets(records, offsets: dict | None = None) -> dict[TopicPartition, int]:
    """The offsets to commit once ``records`` are stored: one past the last record of each partition.
    ``offsets``: ``_offsets_by_partition(records)`` when the caller has it already."""
    offsets = _offsets_by_partition(records) if offsets is None else offsets
    return {TopicPartition(t, p): max(group) + 1 for (t, p), group in offsets.items()}


_TOPIC = attrgetter("topic")
_VALUE = attrgetter("value")
_POSITION = attrgetter("topic", "partition", "offset")


def _offsets_by_partition(records) -> dict[tuple[str, int], list[int]]:
    """The offsets of ``records`` per (topic, partition), in the order they come."""
    out: dict[tuple[str, int], list[int]] = {}
    for topic, partition, offset in map(_POSITION, records):
        key = (topic, partition)
        group = out.get(key)
        if group is None:
            out[key] = [offset]
        else:
            group.append(offset)
    return out


def _decode(contract: type, value: bytes):
    """:func:`core.contracts.decode_record`, faster on the common path: pydantic parses the JSON itself
    (about twice as fast as ``json.loads`` then validation). Anything it refuses, or a record without an
    explicit ``schema_version``, goes through ``decode_record`` for the exact same verdict and reason."""
    try:
        record = contract.model_validate_json(value)
    except Exception:  # ValidationError, and whatever else a hostile value makes of it: the contract decides
        return decode_record(contract, value)
    if "schema_version" not in record.model_fields_set:
        return decode_record(contract, value)
    return record


def _failure(exc: Exception) -> ContractError:
    """An unforeseen exception met while processing one record, as that record's dead-letter reason."""
    return ContractError("processing_failed", f"{type(exc).__name__}: {str(exc)[:500]}")


def _limits_from_env() -> Limits:
    st = StoreSettings()
    return Limits(max_future_s=st.store_max_future_s, max_age_s=st.store_max_age_days * 86400)


def r_key(d: DeadLetter) -> bytes | None:
    return d.key.encode() if d.key is not None else None
