"""Incidents across cameras, end to end: the real broker, ``cvops incidents`` as a process, and a real HTTP
receiver on loopback that refuses for a while (nothing is lost, and what repeats has the same id)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import SecretStr

from core.contracts import Acknowledgement, Alert, CameraInfo, IncidentRecord, decode_record, encode_record
from core.kafka import client_options
from core.topology import create_topics, spec
from streams.incident_stream import IncidentProcessor
from tests.conftest import free_port
from tests.processes import cvops, wait_for
from tests.test_feedback import read_until

pytestmark = pytest.mark.integration
SECRET = "T0KEN-in-the-path"


class Receiver:
    """A real HTTP server that records every POST, or answers 503 while ``down``."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.refused = 0
        self.down = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if outer.down:
                    outer.refused += 1
                    self.send_response(503)
                else:
                    outer.bodies.append({**json.loads(body), "key": self.headers.get("idempotency-key")})
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/{SECRET}"

    def ids(self, status: str | None = None) -> set[str]:
        return {b["id"] for b in self.bodies if status is None or b["status"] == status}


def alert(cam: str, signal: str, status: str = "raised", value: float = 40.0) -> Alert:
    return Alert(alert_id=f"{cam}:{signal}", type="data_drift", status=status, camera_id=cam, signal=signal,
                 value=value, threshold=80.0, window=60, raised_at=1.0, message="m")  # fmt: skip


async def send(settings, topic: str, items: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(**client_options(settings))
    await producer.start()
    try:
        for key, value in items:
            await producer.send_and_wait(settings.topic(topic), value, key=key.encode())
    finally:
        await producer.stop()


def test_a_site_that_darkens_is_one_incident_told_once_and_a_refusing_receiver_loses_nothing(settings, tmp_path):
    receiver = Receiver()
    receiver.thread.start()
    routes = [{"name": "hook", "url": receiver.url, "format": "json"}]
    s = settings.model_copy(update={"incident_window_s": 3.0, "notify_routes": SecretStr(json.dumps(routes))})
    asyncio.run(create_topics(s))
    site = [("n1", "north"), ("n2", "north"), ("n3", "north"), ("n4", "north"), ("s1", "south")]
    asyncio.run(send(s, "cameras", [(f"operator:{c}", encode_record(CameraInfo(camera_id=c, source="operator",
                                                                               site=site_)))
                                    for c, site_ in site]))  # fmt: skip
    log = tmp_path / "incidents.log"
    try:
        with cvops(s, "incidents", log) as proc:
            wait_for(lambda: "correlating alerts" in log.read_text(), "the processor to start", [(proc, log)])
            raised = [alert(c, "brightness") for c in ("n1", "n2", "n3")] + [alert("s1", "blur", value=5.0)]
            asyncio.run(send(s, "alerts", [(a.camera_id, encode_record(a)) for a in raised]))
            wait_for(lambda: len(receiver.ids("raised")) == 2, "two raised incidents", [(proc, log)])
            kinds = sorted((b["incident"]["kind"], tuple(b["incident"]["cameras"])) for b in receiver.bodies)
            assert kinds == [("device", ("s1",)), ("environment", ("n1", "n2", "n3"))]

            receiver.down = True  # resolves must wait for the receiver, and still arrive
            resolved = [alert(a.camera_id, a.signal, "resolved", a.value) for a in raised]
            asyncio.run(send(s, "alerts", [(a.camera_id, encode_record(a)) for a in resolved]))
            done = lambda rs: sum(r.status == "resolved" for r in rs) == 2  # noqa: E731
            records = asyncio.run(read_until(s, "incidents", IncidentRecord, done))
            wait_for(lambda: receiver.refused >= 2, "the notifier to retry", [(proc, log)])
            receiver.down = False
            wait_for(lambda: len(receiver.ids("resolved")) == 2, "two resolved incidents", [(proc, log)])
    finally:
        receiver.server.shutdown()
    assert {r.event_id for r in records} == receiver.ids()  # every incident record told; nothing else
    assert all(b["key"] == b["id"] for b in receiver.bodies)  # the id to deduplicate on, as a header too
    assert SECRET not in log.read_text() and "127.0.0.1" in log.read_text()


def acknowledge(settings, action: str, target: str, target_id: str, lift: bool = False) -> None:
    """What the API publishes when someone acknowledges or silences (``lift``: ends it)."""
    now = time.time()
    ack = Acknowledgement(action=action, target=target, target_id=target_id, by="ann", at=now,
                          until=now if lift else now + 3600)  # fmt: skip
    asyncio.run(send(settings, "acknowledgements", [(ack.key, encode_record(ack))]))


def test_silences_and_acknowledgements_withhold_what_they_should_and_nothing_else(settings, tmp_path):
    """A silenced camera's incident is recorded but not told; a silenced incident tells nothing until its
    silence is lifted; an acknowledged incident tells no join, but its resolve."""
    receiver = Receiver()
    receiver.thread.start()
    routes = [{"name": "hook", "url": receiver.url, "format": "json"}]
    s = settings.model_copy(update={"incident_window_s": 3.0, "notify_routes": SecretStr(json.dumps(routes))})
    asyncio.run(create_topics(s))
    sites = {**{f"n{i}": "north" for i in range(4)}, **{f"w{i}": "west" for i in range(4)}, "s1": "south"}
    asyncio.run(send(s, "cameras", [(f"operator:{c}", encode_record(CameraInfo(camera_id=c, source="operator",
                                                                               site=site)))
                                    for c, site in sites.items()]))  # fmt: skip
    log = tmp_path / "incidents.log"

    def alerts(*items: Alert) -> None:
        asyncio.run(send(s, "alerts", [(a.camera_id, encode_record(a)) for a in items]))

    def told(status: str) -> dict[str, dict]:
        return {b["incident"]["incident_id"]: b for b in receiver.bodies if b["status"] == status}

    def withheld(iid: str, status: str) -> bool:
        return f"incident {iid} {status} not sent" in log.read_text()

    try:
        with cvops(s, "incidents", log) as proc:
            live = [(proc, log)]
            wait_for(lambda: "correlating alerts" in log.read_text(), "the processor to start", live)
            acknowledge(s, "silence", "camera", "s1")  # under maintenance
            alerts(alert("s1", "blur", value=5.0), *(alert(f"n{i}", "brightness") for i in range(3)),
                   *(alert(f"w{i}", "brightness") for i in range(3)))  # fmt: skip
            raised = wait_for(lambda: len(told("raised")) == 2 and told("raised"), "two incidents told", live)
            north, west = sorted(raised, key=lambda i: raised[i]["incident"]["cameras"][0])
            records = asyncio.run(read_until(s, "incidents", IncidentRecord, lambda rs: len(rs) >= 3))
            (lens,) = [r.incident_id for r in records if r.kind == "device"]  # recorded all the same
            wait_for(lambda: withheld(lens, "raised"), "the silenced camera's incident withheld", live)

            acknowledge(s, "silence", "incident", north)
            acknowledge(s, "acknowledge", "incident", west)
            alerts(alert("n3", "brightness"), alert("w3", "brightness"), alert("s1", "blur", "resolved", 5.0))
            wait_for(lambda: withheld(north, "joined") and withheld(west, "joined") and withheld(lens, "resolved"),
                     "the joins and the camera's resolve withheld", live)  # fmt: skip

            acknowledge(s, "silence", "incident", north, lift=True)
            alerts(*(alert(f"{site}{i}", "brightness", "resolved") for site in "nw" for i in range(4)))
            wait_for(lambda: {north, west} <= set(told("resolved")), "both resolves told", live)
    finally:
        receiver.server.shutdown()
    assert sorted((b["status"], b["incident"]["incident_id"]) for b in receiver.bodies) == sorted(
        [("raised", north), ("raised", west), ("resolved", north), ("resolved", west)]
    )  # nothing of the silenced camera, no join
    assert told("resolved")[north]["incident"]["cameras"] == ["n0", "n1", "n2", "n3"]


async def send_all(settings, topic: str, items: list[tuple[str, bytes]], times: list[int] | None = None) -> None:
    """Many records at once (each acknowledged before this returns); ``times``: their timestamps (unix ms)."""
    producer = AIOKafkaProducer(**client_options(settings), acks="all", linger_ms=20)
    await producer.start()
    try:
        stamps = times or [None] * len(items)
        sent = [
            await producer.send(settings.topic(topic), value, key=key.encode(), timestamp_ms=at)
            for (key, value), at in zip(items, stamps, strict=True)
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def state_records(settings) -> list:
    consumer = AIOKafkaConsumer(settings.topic("incidents-state"), bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest")  # fmt: skip
    await consumer.start()
    out = []
    try:
        while batch := await consumer.getmany(timeout_ms=2000):
            out += [r for records in batch.values() for r in records]
    finally:
        await consumer.stop()
    return out


async def end_offsets(settings, name: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        parts = [TopicPartition(settings.topic(name), p) for p in consumer.partitions_for_topic(settings.topic(name))]
        return {tp.partition: o for tp, o in (await consumer.end_offsets(parts)).items()}
    finally:
        await consumer.stop()


async def every_record(settings, name: str, model) -> list:
    """Every record of topic ``name`` up to its end now, as ``model``."""
    end = await end_offsets(settings, name)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    out = []
    try:
        left = {TopicPartition(settings.topic(name), p): o for p, o in end.items() if o > 0}
        consumer.assign(list(left))
        while left:
            for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                out += [decode_record(model, r.value) for r in records]
                if await consumer.position(tp) >= left[tp]:
                    consumer.pause(tp)
                    del left[tp]
    finally:
        await consumer.stop()
    return out


async def run_until(settings, processor: IncidentProcessor, alerts: list[Alert], done) -> None:
    """Run ``processor``, send ``alerts`` once it has its place in the alerts topic, stop once ``done()`` (a
    stop ends the batch in hand: its records and its state written)."""
    stop = asyncio.Event()
    task = asyncio.create_task(processor.run(stop))
    deadline = time.monotonic() + 240
    while len(processor.offsets) < settings.frames_partitions and time.monotonic() < deadline and not task.done():
        await asyncio.sleep(0.1)
    await send_all(settings, "alerts", [(a.camera_id, encode_record(a)) for a in alerts])
    while not done() and time.monotonic() < deadline and not task.done():
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(task, 60)


def test_the_state_of_5000_cameras_fits_the_state_topic_and_restores_after_a_restart(settings):
    """5,000 cameras, each with an incident of its own: the whole state is over a megabyte, each of its
    records a few hundred bytes; a second processor restores it and resolves what the first one raised."""
    s = settings.model_copy(update={"incident_window_s": 2.0})
    asyncio.run(create_topics(s))
    cams = [f"cam{i}" for i in range(5000)]
    inventory = [CameraInfo(camera_id=c, source="gateway", site=f"site{i // 50}") for i, c in enumerate(cams)]
    asyncio.run(send_all(s, "cameras", [(f"gateway:{r.camera_id}", encode_record(r)) for r in inventory]))
    raised = [alert(c, f"signal{i}") for i, c in enumerate(cams)]  # a signal of its own: no two group

    first = IncidentProcessor(s)
    asyncio.run(run_until(s, first, raised, lambda: len(first.correlator.incidents) == 5000))
    assert len(first.correlator.incidents) == 5000, "the first processor did not raise them all"
    records = asyncio.run(state_records(s))
    most = spec(s, "incidents-state").max_message_bytes
    assert max(len(r.value or b"") for r in records) < most / 100
    assert len(json.dumps(first.correlator.to_dict())) > most  # as one record, it would not fit

    second = IncidentProcessor(s)
    resolved = [alert(a.camera_id, a.signal, "resolved") for a in raised]
    asyncio.run(
        run_until(s, second, resolved, lambda: sum(not i.open for i in second.correlator.incidents.values()) == 5000)
    )
    incidents = asyncio.run(read_until(s, "incidents", IncidentRecord, lambda rs: len(rs) >= 10_000))
    assert sorted(r.status for r in incidents).count("resolved") == 5000
    assert len({r.event_id for r in incidents}) == len(incidents) == 10_000  # nothing raised again after the restart


def test_a_backlog_of_a_dusk_read_over_several_batches_is_one_environment_incident(settings):
    """The processor restarts behind a backlog: an hour-old dusk on 8 of a site's 9 cameras, its alerts spread
    over 100 s of broker time among 1,600 other records, read 500 at a time (one partition: two or three of
    the dusk's alerts in each batch). Each alert waits for its companions on the records' time until the
    processor has caught up: one environment incident of the 8, not device incidents of each batch's alerts."""
    s = settings.model_copy(update={"incident_window_s": 120.0, "incident_min_share": 0.5, "frames_partitions": 1})
    asyncio.run(create_topics(s))
    site = [CameraInfo(camera_id=f"n{i}", source="gateway", site="north") for i in range(9)]
    asyncio.run(send_all(s, "cameras", [(f"gateway:{r.camera_id}", encode_record(r)) for r in site]))
    first = IncidentProcessor(s)  # it takes its place at the alerts' end, and keeps it in its state
    asyncio.run(run_until(s, first, [alert("x", "blur", "resolved")], lambda: sum(first.offsets.values()) == 1))

    start, n = time.time() - 3600, 1600
    others = [(f"x{i % 100}", alert(f"x{i % 100}", f"s{i}", "resolved")) for i in range(n)]  # of nothing held
    dusk = {200 * k + 100: (f"n{k}", alert(f"n{k}", "brightness", value=30.0)) for k in range(8)}
    backlog = [dusk.get(i, others[i]) for i in range(n)]
    asyncio.run(send_all(s, "alerts", [(cam, encode_record(a)) for cam, a in backlog],
                         times=[int((start + 100 * i / n) * 1000) for i in range(n)]))  # fmt: skip
    end = asyncio.run(end_offsets(s, "alerts"))
    assert sum(end.values()) - sum(first.offsets.values()) == n  # the backlog, several batches of 500

    second = IncidentProcessor(s)
    asyncio.run(run_until(s, second, [], lambda: second.offsets == end and not second.correlator.pending))
    records = asyncio.run(every_record(s, "incidents", IncidentRecord))
    assert {(r.incident_id, r.kind, r.scope, r.signal, r.direction) for r in records} == {
        (records[0].incident_id, "environment", "site:north", "brightness", "down")}  # fmt: skip
    # raised once five of the nine had raised (the share), then joined by the others
    assert [r.status for r in records] == ["raised", "joined", "joined", "joined"]
    assert records[-1].cameras == [f"n{k}" for k in range(8)] and len(records[-1].members) == 8


def test_a_route_that_is_not_a_url_is_refused_at_start(settings, tmp_path: Path):
    bad = settings.model_copy(update={"notify_routes": SecretStr('[{"name": "x", "url": "ftp://h/"}]')})
    log = tmp_path / "bad.log"
    with cvops(bad, "incidents", log) as proc:
        proc.wait(timeout=120)
    assert proc.returncode == 2 and "must be http:// or https://" in log.read_text()


@pytest.fixture
def alertmanager(tmp_path: Path):
    """Debian's Alertmanager on a loopback port, clustering off, routing everything to a receiver that
    sends nothing (``./dev test`` installs it)."""
    exe = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if exe is None:
        pytest.fail("Alertmanager is not installed: ./dev test installs Debian's prometheus-alertmanager")
    cfg = tmp_path / "alertmanager.yml"
    cfg.write_text("route:\n  receiver: nobody\n  group_wait: 1s\nreceivers:\n  - name: nobody\n")
    port = free_port()
    log = tmp_path / "alertmanager.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [exe, f"--config.file={cfg}", f"--storage.path={tmp_path / 'am'}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _get(f"{url}/-/ready") is not None, "Alertmanager to be ready", [(proc, log)])
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _get(url: str):
    try:
        r = httpx.get(url, timeout=5)
        return r.json() if r.status_code == 200 and "json" in r.headers.get("content-type", "") else r.text
    except httpx.HTTPError:
        return None


def test_an_incident_appears_in_alertmanager_with_its_labels_and_resolves_there(settings, tmp_path, alertmanager):
    routes = [{"name": "am", "url": alertmanager, "format": "alertmanager"}]
    s = settings.model_copy(update={"incident_window_s": 2.0, "notify_routes": SecretStr(json.dumps(routes))})
    asyncio.run(create_topics(s))
    log = tmp_path / "incidents.log"

    def active() -> list[dict]:
        return [a for a in _get(f"{alertmanager}/api/v2/alerts") or [] if a["labels"].get("kind")]

    with cvops(s, "incidents", log) as proc:
        wait_for(lambda: "correlating alerts" in log.read_text(), "the processor to start", [(proc, log)])
        lens = alert("c7", "blur", value=3.0)
        asyncio.run(send(s, "alerts", [("c7", encode_record(lens))]))
        shown = wait_for(active, "the incident in Alertmanager", [(proc, log)])
        labels = shown[0]["labels"]
        assert (labels["kind"], labels["scope"], labels["signal"], labels["direction"]) == (
            "device", "camera:c7", "blur", "down")  # fmt: skip
        assert labels["alertname"] == "cvops_device_incident" and shown[0]["status"]["state"] == "active"
        asyncio.run(send(s, "alerts", [("c7", encode_record(alert("c7", "blur", "resolved", 3.0)))]))
        wait_for(lambda: not active(), "the incident to resolve in Alertmanager", [(proc, log)])
