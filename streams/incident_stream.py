"""The incidents processor and the notifier: thin wiring around :mod:`streams.incidents` and :mod:`streams.notify`.

Dataflow::

    alerts ──Correlator──▶ incidents (IncidentRecord, keyed by incident id)
                      └──▶ incidents-state (compacted: the correlator's state by key, and the alerts offsets
                                            it covers)
    incidents ──routes (CVOPS_NOTIFY_ROUTES)──▶ webhooks, chat, Alertmanager
           ▲                             └──▶ deadletters (reason delivery_failed) for a route that keeps failing
    acknowledgements (compacted: who acknowledged or silenced an incident or a camera, until when)

Correlation needs every alert of a site, which spans partitions, so one correlator reads all of them: the
processor assigns itself every alerts partition (no consumer group) and keeps its position in its own
state record, written after the incident records it covers are acknowledged. After a crash it starts
from the last state and reads the alerts after it again: the incidents they make have the same ids, so a
replay repeats records (at-least-once) that a receiver or the store folds by ``event_id``; none is lost.
Run one processor per deployment (a second one would send every incident twice, under the same ids).
An alert's window runs on the alerts' broker time while the processor reads a backlog (after a restart or a
stall: an alert's companions may be in the next batch) and on the wall clock once it has read every
partition to its end (:func:`window_clock`).

The state is kept by key, one small record each (``incident:<id>``, ``pending:<alert id>``, a tombstone
once it is gone, and ``offsets``), and a batch writes only the keys it changed, the offsets last: at thousands
of cameras the whole state is megabytes, and one record of it would pass the topic's message size. A crash
between a batch's keys and its offsets leaves some keys ahead of the offsets; the alerts read again from those
offsets change nothing that is already there (a replayed raise or resolve is ignored), and finish the rest.

The notifier is an ordinary consumer group on ``incidents``: an offset is committed once every route has
the record or has given up on it (then a dead letter records the route and the reason; the URL, which may
hold a token, is never written anywhere). Before it tells anyone of a batch of records it reads the
``acknowledgements`` topic up to its end, so that a silence or an acknowledgement set before an incident
record was made is honoured for it (:class:`core.silences.Silences`): a withheld record is logged, not sent,
and its offset committed like the others.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from core.compacted import CompactedReader
from core.contracts import (
    Acknowledgement,
    Alert,
    CameraInfo,
    ContractError,
    DeadLetter,
    IncidentRecord,
    decode_record,
    encode_record,
)
from core.inventory import Inventory
from core.kafka import client_options
from core.settings import Settings
from core.silences import Silences
from core.skips import SkipLog
from streams.devbroker import fetch_pacing
from streams.incidents import Correlator, Incident, IncidentEvent
from streams.notify import DeliveryFailed, Route, deliver, summary

log = logging.getLogger("cvops.incidents")
OFFSETS_KEY = "offsets"
LEGACY_KEY = "correlator"  # the whole state in one record, as it was written before it was kept by key


def record_of(event: IncidentEvent, at: float, site: str = "") -> IncidentRecord:
    """The record of ``event``, made at ``at`` (unix s); ``site``: its cameras' site, when they share one."""
    inc = event.incident
    return IncidentRecord(
        event_id=event.event_id, incident_id=inc.incident_id, status=event.status, kind=inc.kind,
        scope=inc.scope, type=inc.type, signal=inc.signal, direction=inc.direction, cameras=inc.cameras,
        members=dict(sorted(inc.members.items())), changed_alert_ids=list(event.alert_ids), opened_at=inc.opened_at,
        resolved_at=inc.resolved_at, summary=summary(event), site=site, changed_at=at,
    )  # fmt: skip


def event_of(record: IncidentRecord) -> IncidentEvent:
    """The event a record describes, for the notifier (which holds no correlator)."""
    inc = Incident(record.incident_id, record.kind, record.scope, record.type, record.signal, record.direction,
                   record.opened_at, members=dict(record.members), resolved_at=record.resolved_at)  # fmt: skip
    return IncidentEvent(record.status, inc, tuple(record.changed_alert_ids))


def window_clock(newest: float | None, lags: Iterable[int | None], wall: float) -> float | None:
    """The time the correlator's windows run on after a batch (unix s): the newest alert record's time while
    any alerts partition has records left to read (``lags``; None: not known yet), as when the processor
    catches up on a backlog, since a waiting alert's companions may be in the next batch; the wall clock
    ``wall`` once every partition is read to its end. None (no tick) while behind before any record is read.

    >>> window_clock(100.0, [0, 3], wall=5000.0), window_clock(100.0, [0, 0], wall=5000.0)
    (100.0, 5000.0)
    >>> window_clock(None, [None], wall=5000.0) is None
    True
    """
    if any(lag is None or lag > 0 for lag in lags):
        return newest
    return wall


def parse_routes(raw: str) -> list[Route]:
    """``CVOPS_NOTIFY_ROUTES``: a JSON list of ``{"name", "url", "format"}``; a clear error for anything else.

    >>> [r.where for r in parse_routes('[{"name": "ops", "url": "https://chat.example/T/B/x", "format": "chat"}]')]
    ['ops (https://chat.example)']
    >>> parse_routes('{"name": "ops"}')
    Traceback (most recent call last):
    ...
    ValueError: CVOPS_NOTIFY_ROUTES must be a JSON list of routes
    """
    if not raw.strip():
        return []
    try:
        items = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"CVOPS_NOTIFY_ROUTES is not JSON: {exc.msg} at {exc.pos}") from None
    if not isinstance(items, list):
        raise ValueError("CVOPS_NOTIFY_ROUTES must be a JSON list of routes")
    routes = [Route.parse(item) for item in items]
    if len({r.name for r in routes}) != len(routes):
        raise ValueError("CVOPS_NOTIFY_ROUTES: route names must be unique")
    return routes


class IncidentProcessor:
    """Reads alerts, writes incidents; see the module docstring for delivery."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.inventory = Inventory()
        self.correlator = Correlator(
            window_s=settings.incident_window_s, min_cameras=settings.incident_min_cameras,
            min_share=settings.incident_min_share, scopes=self.inventory.scopes, gateway=self.inventory.gateway,
            population=self.inventory.population,
        )  # fmt: skip
        self.skips = SkipLog(log)
        self.offsets: dict[int, int] = {}  # alerts partition -> the next offset to read
        self.newest: float | None = None  # the newest alert record's time read (unix s)
        self._rewrite: dict[str, dict | None] = {}  # keys to write with the next batch's changes

    async def _load_state(self) -> None:
        """The state topic folded by key (the newest value of each; a tombstone removes its key), restored."""
        topic = self.settings.topic("incidents-state")
        consumer = AIOKafkaConsumer(**client_options(self.settings), enable_auto_commit=False)
        await consumer.start()
        values: dict[str, bytes] = {}
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            while await consumer.position(tp) < end:
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    for r in records:
                        key = (r.key or b"").decode("utf-8", "replace")
                        if r.value is None:
                            values.pop(key, None)
                        else:
                            values[key] = r.value
        finally:
            await consumer.stop()
        self.restore(values)

    def restore(self, values: dict[str, bytes]) -> None:
        """The correlator's state and the offsets from the state topic's values by key; a state this version
        cannot read is logged and left (the processor starts afresh from the alerts' end)."""
        try:
            if OFFSETS_KEY in values:
                offsets = {int(p): int(o) for p, o in json.loads(values[OFFSETS_KEY])["offsets"].items()}
                items = {k: json.loads(v) for k, v in values.items() if k not in (OFFSETS_KEY, LEGACY_KEY)}
                self.correlator.load_items(items)
                self.offsets = offsets
            elif LEGACY_KEY in values:  # written whole by an earlier version: rewritten by key with the next batch
                whole = json.loads(values[LEGACY_KEY])
                self.correlator.load(whole["correlator"])
                self.offsets = {int(p): int(o) for p, o in whole["offsets"].items()}
                self._rewrite = {**self.correlator.items(), LEGACY_KEY: None}
            else:
                return
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("incident state unreadable (%s); starting from the alerts' end", exc)
            self.correlator.load_items({})
            self.offsets, self._rewrite = {}, {}
            return
        log.info(
            "incident state restored: %d open incidents, %d alerts waiting",
            sum(i.open for i in self.correlator.incidents.values()),
            len(self.correlator.pending),
        )

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        await self._load_state()
        alerts = self.settings.topic("alerts")
        consumer = AIOKafkaConsumer(**client_options(self.settings), enable_auto_commit=False,
                                    auto_offset_reset="latest")  # fmt: skip
        producer = AIOKafkaProducer(**client_options(self.settings), acks="all")
        await consumer.start()
        await producer.start()
        try:
            parts = [TopicPartition(alerts, p) for p in sorted(consumer.partitions_for_topic(alerts) or ())]
            cameras = TopicPartition(self.settings.topic("cameras"), 0)
            consumer.assign([*parts, cameras])
            await consumer.seek_to_beginning(cameras)
            await self._read_inventory(consumer, cameras)
            for tp in parts:
                if tp.partition in self.offsets:
                    consumer.seek(tp, self.offsets[tp.partition])
                else:
                    await consumer.seek_to_end(tp)
                    self.offsets[tp.partition] = await consumer.position(tp)
            log.info("correlating alerts from %d partitions", len(parts))
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=500, max_records=500)
                events = self._take(batch)
                lags = [self._lag(consumer, tp) for tp in parts]
                if (now := window_clock(self.newest, lags, time.time())) is not None:
                    events += [(e, now) for e in self.correlator.tick(now)]
                    self.correlator.prune(now)
                if events or batch:
                    await self._send(producer, events)
        finally:
            await consumer.stop()
            await producer.stop()

    def _lag(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
        """Records of ``tp`` left to read, as of the last fetch (None before the first)."""
        highwater = consumer.highwater(tp)
        return None if highwater is None else highwater - self.offsets.get(tp.partition, highwater)

    async def _read_inventory(self, consumer: AIOKafkaConsumer, cameras: TopicPartition) -> None:
        """The whole inventory before the first alert, so that every camera's site is known."""
        end = (await consumer.end_offsets([cameras]))[cameras]
        consumer.pause(*[tp for tp in consumer.assignment() if tp != cameras])
        while await consumer.position(cameras) < end:
            self._take(await consumer.getmany(cameras, timeout_ms=1000))
        consumer.resume(*consumer.assignment())
        log.info("inventory: %d cameras", len(self.inventory.cameras))

    def _take(self, batch) -> list[tuple[IncidentEvent, float]]:
        """The inventory's changes applied; the incident events the alerts make, each with its alert's time."""
        events = []
        for tp, records in batch.items():
            if tp.topic == self.settings.topic("cameras"):
                for r in records:
                    try:
                        info = decode_record(CameraInfo, r.value) if r.value is not None else None
                    except ContractError as exc:
                        self.skips.skip(r, exc)
                        continue
                    self.inventory.apply(r.key.decode("utf-8", "replace") if r.key else "", info)
                continue
            for r in records:
                self.offsets[tp.partition] = r.offset + 1
                try:
                    alert = decode_record(Alert, r.value)
                except ContractError as exc:  # the worker's writer dead-letters bad alerts; here they are skipped
                    self.skips.skip(r, exc)
                    continue
                now = r.timestamp / 1000 if r.timestamp else time.time()
                self.newest = now if self.newest is None else max(self.newest, now)
                events += [(e, now) for e in self.correlator.observe(alert, now=now)]
        return events

    async def _send(self, producer: AIOKafkaProducer, events: list[tuple[IncidentEvent, float]]) -> None:
        topic = self.settings.topic("incidents")
        sent = []
        for e, at in events:
            record = record_of(e, at, self.inventory.site_of(e.incident.cameras))
            sent.append(await producer.send(topic, encode_record(record), key=e.incident.incident_id.encode()))
        await asyncio.gather(*sent)
        for e, _ in events:
            log.info("incident %s %s: %s", e.incident.incident_id, e.status, summary(e))
        await self._write_state(producer)

    async def _write_state(self, producer: AIOKafkaProducer) -> None:
        """The keys this batch changed, then the offsets: in this order on the state topic's one partition."""
        topic = self.settings.topic("incidents-state")
        changes = {**self._rewrite, **self.correlator.take_changes()}
        self._rewrite = {}
        offsets = {"version": 1, "offsets": {str(p): o for p, o in self.offsets.items()}}
        sent = [
            await producer.send(topic, json.dumps(value).encode() if value is not None else None, key=key.encode())
            for key, value in [*changes.items(), (OFFSETS_KEY, offsets)]
        ]
        await asyncio.gather(*sent)


class Notifier:
    """Sends each incident record to every route; see the module docstring for delivery."""

    def __init__(self, settings: Settings, routes: list[Route], attempts: int = 8):
        self.settings = settings
        self.routes = routes
        self.attempts = attempts
        self.skips = SkipLog(log)
        self.silences = Silences()
        self.acknowledgements = CompactedReader(
            settings, ["acknowledgements"], self._acknowledged, started=fetch_pacing.pace_slow_topic
        )

    def _acknowledged(self, r) -> None:
        key = (r.key or b"").decode("utf-8", "replace")
        self.silences.apply(key, decode_record(Acknowledgement, r.value) if r.value is not None else None)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        topic = self.settings.topic("incidents")
        consumer = AIOKafkaConsumer(topic, **client_options(self.settings), group_id=f"{self.settings.app_id}-notify",
                                    enable_auto_commit=False, auto_offset_reset="earliest")  # fmt: skip
        producer = AIOKafkaProducer(**client_options(self.settings), acks="all")
        await consumer.start()
        await producer.start()
        await self.acknowledgements.start()
        log.info("notifying %d route(s): %s", len(self.routes), ", ".join(r.where for r in self.routes) or "none")
        try:
            async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as client:
                while not stop.is_set():
                    batch = await consumer.getmany(timeout_ms=500, max_records=50)
                    if batch:
                        await self.acknowledgements.catch_up()
                    for records in batch.values():
                        for r in records:
                            await self._notify(client, producer, r)
                    if batch:
                        await consumer.commit()
        finally:
            await self.acknowledgements.close()
            await consumer.stop()
            await producer.stop()

    async def _notify(self, client: httpx.AsyncClient, producer: AIOKafkaProducer, r) -> None:
        try:
            record = decode_record(IncidentRecord, r.value)
        except ContractError as exc:
            await self._dead(producer, r, exc.reason, exc.detail)
            return
        why = self.silences.withheld(record.incident_id, record.cameras, record.status, time.time())
        if why is not None:
            log.info("incident %s %s not sent: %s", record.incident_id, record.status, why)
            return
        event = event_of(record)
        results = await asyncio.gather(
            *(deliver(client, route, event, attempts=self.attempts) for route in self.routes), return_exceptions=True
        )
        for route, result in zip(self.routes, results, strict=True):
            if isinstance(result, DeliveryFailed):
                log.warning("%s", result)
                await self._dead(producer, r, "delivery_failed", f"route {route.name}: {result.last}")
            elif isinstance(result, BaseException):
                raise result

    async def _dead(self, producer: AIOKafkaProducer, r, reason: str, detail: str) -> None:
        dl = DeadLetter.of(r.topic, r.partition, r.offset, r.key, r.value, ContractError(reason, detail))
        await producer.send_and_wait(self.settings.topic("deadletters"), encode_record(dl), key=r.key)
