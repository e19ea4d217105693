"""Requests cannot hold the API's memory or its event loop: on the real app under uvicorn, the real broker and
an embedded ClickHouse engine.

- Access is checked before a body is read, and every body has a size limit (:mod:`api.guard`).
- No ``async`` route calls the store or does heavy work on the event loop; ``/health/live`` answers while an
  export is stuck in the store.
- A frame's boxes are looked up through the sort key and a skip index, not by scanning ``predictions``.
- Edge-case exports stream.
- Live alert streams are capped per client as well as in all.
- With closed reads, ``/metrics`` and the API's schema and docs need a token too.
"""

from __future__ import annotations

import json
import socket
import uuid

import pytest
from fastapi.routing import APIRoute

from api.auth import read_access, require_token
from api.guard import GuardedRoute
from tests.api.conftest import TOKEN, auth

pytestmark = pytest.mark.integration

HUGE = 400_000_000  # declared, never sent: the answer must come before it would be


def exchange(port: int, head: str, body: bytes = b"") -> tuple[int, dict, bytes]:
    """Send a request's head and the first bytes of its body, then read the answer: (status, headers, body).
    The rest of the body is never sent, so an answer at all means the server did not wait for it."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head.encode("latin-1") + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            assert chunk, f"the server closed the connection without an answer: {data!r}"
            data += chunk
        top, rest = data.split(b"\r\n\r\n", 1)
        lines = top.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        while len(rest) < int(headers.get("content-length", 0)):
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        return int(lines[0].split()[1]), headers, rest


def head(method: str, path: str, *lines: str) -> str:
    return "\r\n".join([f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json", *lines, ""])


def api_routes(routes) -> list[APIRoute]:
    """Every route of the app, those of included routers too."""
    found = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif (router := getattr(route, "original_router", None)) is not None:  # an included router
            found += api_routes(router.routes)
    return found


def body_routes(app) -> list[APIRoute]:
    return [r for r in api_routes(app.routes) if r.body_field is not None]


def concrete(path: str) -> str:
    return path.replace("{camera_id}", f"cam-{uuid.uuid4().hex[:8]}")


# --- bodies -------------------------------------------------------------------------------------------------------


def test_every_route_that_takes_a_body_is_guarded_and_needs_a_token(app):
    routes = body_routes(app)
    schema = app.openapi()["paths"]
    with_body = {(m.upper(), p) for p, ops in schema.items() for m, op in ops.items() if "requestBody" in op}
    assert {(m, r.path) for r in routes for m in r.methods} == with_body
    assert with_body >= {
        ("POST", "/api/v1/sql"), ("PUT", "/api/v1/config/fleet"), ("PUT", "/api/v1/config/cameras/{camera_id}"),
    }  # fmt: skip
    for route in routes:
        assert isinstance(route, GuardedRoute), route.path
        assert 0 < route.max_body_bytes <= 1 << 20, route.path
        checks = {d.call for d in route.dependant.dependencies} & {require_token, read_access}
        assert checks == {require_token}, route.path


def test_an_unauthenticated_huge_body_is_refused_before_it_is_read(app, api_config):
    port = api_config[0].api_port
    for route in body_routes(app):
        for method in route.methods:
            path = concrete(route.path)
            for token in ([], ["Authorization: Bearer wrong-token"]):
                status, headers, body = exchange(
                    port, head(method, path, f"Content-Length: {HUGE}", *token), b"{" + b" " * 65536
                )
                assert status == 401, (method, path, body)
                assert headers["www-authenticate"] == "Bearer"
                assert headers["content-type"] == "application/json"
            # without a declared length too
            status, _, body = exchange(
                port, head(method, path, "Transfer-Encoding: chunked"), b"10000\r\n" + b" " * 4096
            )
            assert status == 401, (method, path, body)


def test_an_authenticated_oversized_body_is_413_while_it_arrives(app, api_config):
    port = api_config[0].api_port
    for route in body_routes(app):
        for method in route.methods:
            path = concrete(route.path)
            status, _, body = exchange(
                port, head(method, path, f"Content-Length: {HUGE}", f"Authorization: Bearer {TOKEN}"), b"{ "
            )
            assert status == 413, (method, path, body)
            assert json.loads(body)["detail"] == f"the body is over {route.max_body_bytes} bytes"
            # chunked, no declared length: refused once the bytes received pass the limit, the rest unsent
            chunk = b" " * 16384
            stream = (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * (route.max_body_bytes // len(chunk) + 2)
            status, _, body = exchange(
                port, head(method, path, "Transfer-Encoding: chunked", f"Authorization: Bearer {TOKEN}"), stream
            )
            assert status == 413, (method, path, body)


def test_a_body_within_the_limit_still_works(client):
    r = client.put(f"/api/v1/config/cameras/{concrete('{camera_id}')}", json={}, headers=auth())
    assert r.status_code == 202, r.text
    assert client.put("/api/v1/config/fleet", json={"no_such_setting": 1}, headers=auth()).status_code == 422
