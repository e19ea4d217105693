"""Alerts: stored ones filtered and paged in the pipeline tests' shape; live ones as Server-Sent Events."""

from __future__ import annotations

import asyncio
import json
import threading

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from core.contracts import encode_record
from core.kafka import client_options
from tests.api.conftest import seed
from tests.store.records import alert

pytestmark = pytest.mark.integration


def test_alerts_filter_by_camera_type_status_and_time(client, store, now, camera):
    other = f"{camera}-other"
    seed(
        store,
        alerts=[
            alert(camera, 0, now - 300),
            alert(camera, 0, now - 200, status="resolved"),
            alert(camera, 1, now - 100, type="device_fault", signal="fps"),
            alert(other, 0, now - 50),
        ],
    )
    got = client.get("/api/v1/alerts", params={"camera_id": camera}).json()
    assert [(a["alert_id"], a["status"]) for a in got] == [
        (f"{camera}-a1", "raised"),
        (f"{camera}-a0", "resolved"),
        (f"{camera}-a0", "raised"),
    ]
    assert {"status", "signal", "type", "alert_id", "message"} <= set(got[0])  # what tests/test_faults.py reads

    def ids(**params):
        r = client.get("/api/v1/alerts", params={"camera_id": camera, **params})
        assert r.status_code == 200, r.text
        return [(a["alert_id"].removeprefix(camera), a["status"]) for a in r.json()]

    assert ids(type="device_fault") == [("-a1", "raised")]
    assert ids(status="resolved") == [("-a0", "resolved")]
    assert ids(since=now - 250) == [("-a1", "raised"), ("-a0", "resolved")]
    assert ids(since=now - 250, until=now - 150) == [("-a0", "resolved")]
    assert ids(limit=2) == [("-a1", "raised"), ("-a0", "resolved")]
    assert ids(limit=2, offset=2) == [("-a0", "raised")]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 100_000},
        {"offset": -1},
        {"type": "no_such_type"},
        {"status": "open"},
        {"since": "last tuesday"},
        {"until": "0001-01-01T00:01:00+04:00"},  # before year 1 in UTC: found by the schema fuzzer
        {"camera_id": ""},
        {"camera_id": "x" * 201},
    ],
)
def test_malformed_alert_filters_are_422(client, params):
    r = client.get("/api/v1/alerts", params=params)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"][0] == "query"


def test_since_after_until_is_400(client):
    r = client.get("/api/v1/alerts", params={"since": 2000, "until": 1000})
    assert r.status_code == 400
    assert r.json() == {"detail": "since must be before until"}


def read_events(url: str, events: list, subscribed: threading.Event, stop: threading.Event) -> None:
    """Collect SSE events (dicts of field -> value) from ``url`` until ``stop``; set ``subscribed`` once open."""
    with httpx.Client(timeout=30) as c, c.stream("GET", url) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        event: dict = {}
        for line in r.iter_lines():
            if line.startswith(": subscribed"):
                subscribed.set()
            elif line.startswith(":"):
                event = {}
                events.append({"comment": line[1:].strip()})
            elif line:
                field, _, value = line.partition(": ")
                event[field] = value
            elif event:
                events.append(event)
                event = {}
            if stop.is_set():
                return


async def publish(settings, alerts) -> None:
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    try:
        for a in alerts:
            await producer.send_and_wait(settings.topic("alerts"), encode_record(a), key=a.camera_id.encode())
    finally:
        await producer.stop()


def test_the_stream_delivers_published_alerts_with_heartbeats(api_config, now, camera):
    settings = api_config[0]
    url = f"http://127.0.0.1:{settings.api_port}/api/v1/alerts/stream?camera_id={camera}"
    events, subscribed, stop = [], threading.Event(), threading.Event()
    reader = threading.Thread(target=read_events, args=(url, events, subscribed, stop), daemon=True)
    reader.start()
    assert subscribed.wait(15), "the stream did not open"
    mine, theirs = alert(camera, 0, now, message="live one"), alert(f"{camera}-x", 0, now)
    asyncio.run(publish(settings, [theirs, mine]))
    for _ in range(100):
        if any(e.get("event") == "alert" for e in events) and any("comment" in e for e in events):
            break
        threading.Event().wait(0.1)
    stop.set()
    delivered = [json.loads(e["data"]) for e in events if e.get("event") == "alert"]
    assert [(a["alert_id"], a["message"]) for a in delivered] == [(f"{camera}-a0", "live one")]
    assert {"comment": "keepalive"} in events  # heartbeat every 0.5 s in these tests
    assert all(e.get("id", "0:0").count(":") == 1 for e in events if e.get("event") == "alert")


def test_a_slow_subscriber_loses_its_oldest_alerts_and_is_told(app, camera):
    from api.live import AlertFeed

    feed = AlertFeed(app.state.settings, queue_size=2)
    sub = feed.subscribe(camera)
    for n in range(5):
        feed.publish((f"0:{n}", alert(camera, n)))
    feed.publish(("0:9", alert("someone-else", 9)))
    assert sub.dropped == 3
    assert [sub.queue.get_nowait()[0] for _ in range(2)] == ["0:3", "0:4"]
    assert feed.subscribe() is not None
    feed.max_subscribers = 2
    assert feed.subscribe() is None
