"""Incident notifications: bodies, routes and retries (pure; the HTTP receiver tests run a real server)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from streams.incidents import Incident, IncidentEvent
from streams.notify import DeliveryFailed, Route, body, deliver

INC = Incident("inc-1", "environment", "site:north", "data_drift", "brightness", "down", 1_700_000_000.0,
               members={"a1": "c1", "a2": "c2"})  # fmt: skip
EVENT = IncidentEvent("raised", INC, ("a1", "a2"))


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"name": "a", "url": "file:///etc/passwd"}, "http:// or https://"),
        ({"name": "a", "url": "http:///nohost"}, "with a host"),
        ({"name": "a", "url": "https://h/", "format": "sms"}, "format must be one of"),
        ({"url": "https://h/"}, "needs a name"),
        (["not", "a", "mapping"], "an object"),
    ],
)
def test_a_bad_route_is_refused_with_a_clear_message(raw, message):
    with pytest.raises(ValueError, match=message):
        Route.parse(raw)


def test_bodies():
    chat = body(Route("c", "https://h/x", "chat"), EVENT, 0)
    assert chat == {"text": "[raised] environment incident on site:north: brightness down on 2 cameras (c1, c2)"}
    am = body(Route("a", "https://am:9093", "alertmanager"), EVENT, now=1_700_000_100.0, hold_s=60)
    assert am[0]["labels"]["incident_id"] == "inc-1" and am[0]["startsAt"].startswith("2023-11-14T22:13:20")
    assert am[0]["endsAt"].startswith("2023-11-14T22:16:00")  # now + hold while open
    plain = body(Route("j", "https://h/", "json"), EVENT, 0)
    assert plain["id"] == "inc-1:raised" and plain["incident"]["cameras"] == ["c1", "c2"]
    assert Route("a", "https://am:9093/", "alertmanager").target == "https://am:9093/api/v2/alerts"


ROUTE = Route("r", "https://receiver.test/hook/SECRET", "json")


def _run(handler, route=ROUTE, attempts=4):
    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await deliver(client, route, EVENT, attempts=attempts, sleep=lambda s: asyncio.sleep(0))

    return asyncio.run(go())


def test_retries_on_5xx_and_connection_errors_then_succeeds_with_a_stable_key():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["idempotency-key"])
        if len(seen) == 1:
            raise httpx.ConnectError("down")
        return httpx.Response(503 if len(seen) == 2 else 200)

    assert _run(handler) == 3 and seen == ["inc-1:raised"] * 3


def test_gives_up_without_naming_the_secret():
    with pytest.raises(DeliveryFailed) as err:
        _run(lambda r: httpx.Response(500), attempts=3)
    assert err.value.attempts == 3 and "SECRET" not in str(err.value) and "receiver.test" in str(err.value)
    with pytest.raises(DeliveryFailed) as refused:  # a 4xx other than 429 cannot get better
        _run(lambda r: httpx.Response(400))
    assert refused.value.attempts == 1
