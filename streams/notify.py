"""Telling people: incident notifications sent to webhooks and to Alertmanager, with retries.

Pure parts (routes, bodies, the retry schedule) and one small sender (httpx). A route is configured by
name, URL and format:

- ``json``: cvops' own body, ``{"id", "status", "incident": {...}}``, for any receiver;
- ``chat``: ``{"text": "..."}``, which the incoming webhooks of common chat tools (Slack, Mattermost,
  Rocket.Chat, Google Chat) accept as they are;
- ``alertmanager``: Alertmanager's HTTP API (``POST <url>/api/v2/alerts``), so that a team keeps its own
  routing, silences and on-call rota. An open incident is sent with ``endsAt`` ``hold_s`` ahead and sent
  again before that passes; its resolve is sent with ``endsAt`` now.

At-least-once: every body carries a stable ``id`` (the incident's id and status), also sent as the
``Idempotency-Key`` header, for a receiver to deduplicate on. A route's URL often holds its secret (a chat
tool's webhook token is in the path), so routes are read from the environment (``CVOPS_NOTIFY_ROUTES``)
and only :func:`Route.where` (scheme and host) is ever logged.

>>> r = Route.parse({"name": "ops", "url": "https://chat.example/hooks/T0/B0/secret", "format": "chat"})
>>> r.where
'ops (https://chat.example)'
>>> Route.parse({"name": "x", "url": "ftp://host/", "format": "json"})
Traceback (most recent call last):
...
ValueError: route 'x': the URL must be http:// or https:// with a host
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx

from streams.incidents import IncidentEvent

log = logging.getLogger("cvops.notify")
FORMATS = ("json", "chat", "alertmanager")


@dataclass(frozen=True)
class Route:
    name: str
    url: str
    format: str = "json"

    @classmethod
    def parse(cls, raw: object) -> Route:
        """A route from its configuration (a mapping); a clear ``ValueError`` for anything else."""
        if not isinstance(raw, dict):
            raise ValueError("a route is an object with name, url and format")
        name, url, fmt = str(raw.get("name", "")), raw.get("url"), raw.get("format", "json")
        if not name or len(name) > 100:
            raise ValueError("a route needs a name of 1 to 100 characters")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"route {name!r}: the URL must be http:// or https:// with a host")
        if fmt not in FORMATS:
            raise ValueError(f"route {name!r}: format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        return cls(name, url, fmt)

    @property
    def where(self) -> str:
        """Fit to log: the route's name, scheme and host; never its path or query, which may hold a token."""
        parts = urlsplit(self.url)
        port = f":{parts.port}" if parts.port else ""
        return f"{self.name} ({parts.scheme}://{parts.hostname}{port})"

    @property
    def target(self) -> str:
        if self.format == "alertmanager":
            return self.url.rstrip("/") + "/api/v2/alerts"
        return self.url


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def summary(event: IncidentEvent) -> str:
    """One line for people.

    >>> from streams.incidents import Incident
    >>> inc = Incident("inc-1", "environment", "site:north", "data_drift", "brightness", "down", 0.0,
    ...                members={"a1": "c1", "a2": "c2"})
    >>> summary(IncidentEvent("raised", inc, ("a1", "a2")))
    '[raised] environment incident on site:north: brightness down on 2 cameras (c1, c2)'
    """
    inc = event.incident
    cams = inc.cameras
    shown = ", ".join(cams[:10]) + (f" and {len(cams) - 10} more" if len(cams) > 10 else "")
    what = f"{inc.signal} {inc.direction}" if inc.direction != "changed" else f"{inc.signal} changed"
    n = f"{len(cams)} camera{'s' if len(cams) != 1 else ''}"
    return f"[{event.status}] {inc.kind} incident on {inc.scope}: {what} on {n} ({shown})"


def body(route: Route, event: IncidentEvent, now: float, hold_s: float = 86_400.0) -> object:
    """The request body ``route`` sends for ``event``."""
    inc = event.incident
    if route.format == "chat":
        return {"text": summary(event)}
    if route.format == "alertmanager":
        ends = inc.resolved_at if inc.resolved_at is not None else now + hold_s
        return [
            {
                "labels": {
                    "alertname": f"cvops_{inc.kind}_incident", "incident_id": inc.incident_id, "kind": inc.kind,
                    "scope": inc.scope, "type": inc.type, "signal": inc.signal, "direction": inc.direction,
                },
                "annotations": {"summary": summary(event), "cameras": ", ".join(inc.cameras)},
                "startsAt": _iso(inc.opened_at),
                "endsAt": _iso(ends),
            }
        ]  # fmt: skip
    return {"id": event.event_id, "status": event.status, "summary": summary(event),
            "incident": {**inc.to_dict(), "cameras": inc.cameras}}  # fmt: skip


def backoff(attempt: int, base_s: float = 1.0, most_s: float = 60.0, rng: random.Random | None = None) -> float:
    """Seconds before retry ``attempt`` (1, 2, ...): exponential, capped, with full jitter.

    >>> all(0 <= backoff(n, rng=random.Random(n)) <= min(60, 2 ** (n - 1)) for n in range(1, 12))
    True
    """
    return (rng or random).uniform(0, min(most_s, base_s * 2 ** (attempt - 1)))


class DeliveryFailed(RuntimeError):
    def __init__(self, route: Route, attempts: int, last: str):
        super().__init__(f"route {route.where}: gave up after {attempts} attempts ({last})")
        self.route, self.attempts, self.last = route, attempts, last


async def deliver(
    client: httpx.AsyncClient,
    route: Route,
    event: IncidentEvent,
    *,
    attempts: int = 8,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    hold_s: float = 86_400.0,
) -> int:
    """Send ``event`` on ``route`` until a 2xx answer; retries on connection errors, 429 and 5xx with
    :func:`backoff`, gives up at once on other 4xx (the receiver refuses the body: retrying cannot help).
    Returns the attempts it took; raises :class:`DeliveryFailed` (never with the URL's path or query)."""
    last = ""
    for attempt in range(1, attempts + 1):
        try:
            resp = await client.post(
                route.target,
                json=body(route, event, time.time(), hold_s),
                headers={"Idempotency-Key": event.event_id},
            )
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        else:
            if resp.is_success:
                return attempt
            last = f"HTTP {resp.status_code}"
            if resp.status_code < 500 and resp.status_code != 429:
                raise DeliveryFailed(route, attempt, last)
        if attempt < attempts:
            await sleep(backoff(attempt))
    raise DeliveryFailed(route, attempts, last)
