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

import ast
import asyncio
import base64
import inspect
import io
import json
import re
import socket
import textwrap
import threading
import time
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import cv2
import httpx
import numpy as np
import pytest
from fastapi.routing import APIRoute

from api.auth import read_access, require_token
from api.dependencies import get_store
from api.evidence import BOXES_SQL, boxes_of, coco_zip, query_edge_cases
from api.guard import GuardedRoute
from core.contracts import Detection, Evidence, Prediction, Timings
from store import Store
from store.writer import SINKS, evidence_row, prediction_row
from tests.api.conftest import TOKEN, auth
from tests.api.test_alerts import read_events

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
    return path.replace("{camera_id}", f"cam-{uuid.uuid4().hex[:8]}").replace("{incident_id}", "inc-0123456789abcdef")


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
    """On every state-changing route: those that take a body, and those that take none (and must not wait
    for one either)."""
    port = api_config[0].api_port
    changing = [r for r in api_routes(app.routes) if r.methods - {"GET", "HEAD"}]
    assert {id(r) for r in body_routes(app)} < {id(r) for r in changing}
    for route in changing:
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


# --- the event loop -----------------------------------------------------------------------------------------------

OFF_THE_LOOP = {"to_thread", "run_in_threadpool", "run_sync"}  # asyncio's, Starlette's, anyio's


def store_on_the_loop(endpoint) -> list[str]:
    """The uses of the store in ``endpoint``'s source (a parameter named ``store`` or any ``.store``) that are
    not handed to a thread: neither an argument of ``to_thread``/``run_in_threadpool``/``run_sync``, nor a
    method of the store passed as one, nor inside a nested function passed as one."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(endpoint)))
    handed, functions = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in OFF_THE_LOOP:
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                handed.add(id(arg))
                if isinstance(arg, ast.Attribute):  # store.query: the method, called in the thread
                    handed.add(id(arg.value))
                if isinstance(arg, ast.Name):
                    functions.add(arg.id)
    for node in ast.walk(tree.body[0]):
        if isinstance(node, ast.FunctionDef) and node.name in functions:  # a closure run in the thread
            handed |= {id(n) for n in ast.walk(node)}
    uses = [
        n
        for n in ast.walk(tree)
        if (isinstance(n, ast.Name) and n.id == "store") or (isinstance(n, ast.Attribute) and n.attr == "store")
    ]
    return [ast.unparse(n) for n in uses if id(n) not in handed]


def test_no_async_route_uses_the_store_on_the_event_loop(app):
    checked = []
    for route in api_routes(app.routes):
        if not inspect.iscoroutinefunction(route.endpoint):
            continue  # a plain def runs in the thread pool
        takes_store = any(d.call is get_store for d in route.dependant.dependencies)
        on_loop = store_on_the_loop(route.endpoint)
        assert not on_loop, f"{route.path}: {on_loop} on the event loop"
        checked.append((route.path, takes_store))
    assert ("/health/ready", True) in checked  # one that reads the store, through to_thread
    assert ("/health/live", False) in checked


def test_the_check_finds_a_store_call_on_the_loop():
    async def blocking(store):
        return store.query("SELECT 1")

    async def handed(store):
        return await asyncio.to_thread(store.query, "SELECT 1")

    async def through_the_app(request):
        return await asyncio.to_thread(helper, request.app.state.store)

    async def closure(store):
        def run():
            return store.query("SELECT 1")

        return await anyio.to_thread.run_sync(run)

    async def closure_on_the_loop(store):
        def run():
            return store.query("SELECT 1")

        return run()

    def helper(store):
        return store

    assert store_on_the_loop(blocking) == ["store"]
    assert store_on_the_loop(handed) == []
    assert store_on_the_loop(through_the_app) == []
    assert store_on_the_loop(closure) == []
    assert store_on_the_loop(closure_on_the_loop) == ["store"]


class Stalled:
    """The app's store, whose first query waits until ``release`` is set (``entered`` says it is waiting)."""

    def __init__(self, store: Store):
        self.store, self.entered, self.release = store, threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self.store, name)

    def _hold(self) -> None:
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(120)

    def query(self, *args, **kwargs):
        self._hold()
        return self.store.query(*args, **kwargs)

    def query_dicts(self, *args, **kwargs):
        self._hold()
        return self.store.query_dicts(*args, **kwargs)


def seed_edge_cases(store: Store, camera: str, n: int) -> list[Evidence]:
    t = time.time() - 60
    jpeg = base64.b64encode(cv2.imencode(".jpg", np.full((90, 160, 3), 90, np.uint8))[1].tobytes()).decode()
    edges = [
        Evidence(alert_id=f"{camera}-e{i}", camera_id=camera, frame_id=f"{camera}:0:{i}", role="edge_case",
                 reason="outlier", score=3.0, captured_at=t + i / 1000, width=160, height=90, source_width=1280,
                 source_height=720, image_b64=jpeg)
        for i in range(n)
    ]  # fmt: skip
    store.insert("evidence_frames", [evidence_row(e) for e in edges], SINKS["evidence"].columns)
    box = Detection(label="person", class_id=0, score=0.5, box=(128.0, 72.0, 256.0, 360.0))
    preds = [
        Prediction(frame_id=e.frame_id, camera_id=camera, seq=i, captured_at=e.captured_at,
                   processed_at=e.captured_at, model_name="m", model_version="1", width=1280, height=720,
                   batch_size=1, detections=[box],
                   timings=Timings(queue_ms=1, decode_ms=1, preprocess_ms=1, inference_ms=1, postprocess_ms=1))
        for i, e in enumerate(edges)
    ]  # fmt: skip
    store.insert("predictions", [prediction_row(p) for p in preds], SINKS["predictions"].columns)
    return edges


def test_health_answers_while_an_export_waits_on_the_store(app, client, store, api_config, camera):
    seed_edge_cases(store, camera, 3)
    stalled = Stalled(store)
    app.dependency_overrides[get_store] = lambda: stalled
    base = f"http://127.0.0.1:{api_config[0].api_port}"
    try:
        with ThreadPoolExecutor(1) as pool:
            export = pool.submit(httpx.get, f"{base}/api/v1/edge-cases/export", params={"camera_id": camera},
                                 timeout=120)  # fmt: skip
            assert stalled.entered.wait(60), "the export did not reach the store"
            # the export is inside a store call that has not returned: the event loop must still answer
            assert httpx.get(f"{base}/health/live", timeout=20).json() == {"status": "ok", "checks": {}}
            assert not export.done()
            stalled.release.set()
            r = export.result(120)
    finally:
        stalled.release.set()
        app.dependency_overrides.pop(get_store, None)
    assert r.status_code == 200
    assert len(json.loads(zipfile.ZipFile(io.BytesIO(r.content)).read("annotations.json"))["images"]) == 3


# --- look-ups -----------------------------------------------------------------------------------------------------

BLOOM_CAMERA = "bounds-bloom"  # fixed ids: the granules a bloom filter lets through are then the same every run


def granules(plan: str, index: str) -> tuple[int, int]:
    """(selected, of) granules after ``index`` ("PrimaryKey" or a skip index's name) in an ``EXPLAIN indexes=1``."""
    marker = "PrimaryKey" if index == "PrimaryKey" else f"Name: {index}"
    m = re.search(re.escape(marker) + r".*?Granules: (\d+)/(\d+)", plan, re.DOTALL)
    assert m, plan
    return int(m.group(1)), int(m.group(2))


def test_a_frames_boxes_are_found_through_the_sort_key_and_a_skip_index(store):
    if not store.query("SELECT 1 FROM predictions WHERE camera_id = {c:String} LIMIT 1", {"c": BLOOM_CAMERA}):
        # 200,000 frames of one camera: about 25 granules of 8,192 rows, all of them under one camera
        store.command(
            """
            INSERT INTO predictions (frame_id, camera_id, seq, captured_at, processed_at)
            SELECT concat({c:String}, ':0:', toString(number)), {c:String}, number,
                   fromUnixTimestamp64Milli(toInt64(toUnixTimestamp64Milli(now64(3)) - 3600000 + number * 10)),
                   now64(3)
            FROM numbers(200000)
            """,
            {"c": BLOOM_CAMERA},
        )
    frame = f"{BLOOM_CAMERA}:0:123456"
    params = {"cameras": [BLOOM_CAMERA], "frames": [frame]}
    plan = "\n".join(row[0] for row in store.query(f"EXPLAIN indexes = 1 {BOXES_SQL}", params))
    by_key, table = granules(plan, "PrimaryKey")
    by_bloom, after_key = granules(plan, "frame_id_bloom")
    assert table >= by_key >= 20, plan  # the camera alone leaves all of its granules...
    assert after_key == by_key and by_bloom <= 2, plan  # ...the frame id's bloom filter one or two
    assert frame in boxes_of(store, [(BLOOM_CAMERA, frame)])


# --- exports ------------------------------------------------------------------------------------------------------


class Counting:
    """The store, counting the thumbnails its queries have returned."""

    def __init__(self, store: Store):
        self.store, self.thumbnails = store, 0

    def query(self, sql, *args, **kwargs):
        rows = self.store.query(sql, *args, **kwargs)
        if "base64Encode(image)" in sql:
            self.thumbnails += len(rows)
        return rows


def test_an_export_streams_a_batch_of_thumbnails_at_a_time(client, store, camera):
    seed_edge_cases(store, camera, 7)
    rows = query_edge_cases(store, camera, None, None, None, 100)
    counting = Counting(store)
    pieces = coco_zip(counting, rows, batch=3)
    first = next(pieces)
    assert first.startswith(b"PK\x03\x04") and counting.thumbnails == 3  # sent before the next batch is read
    rest = b"".join(pieces)
    assert counting.thumbnails == 7
    z = zipfile.ZipFile(io.BytesIO(first + rest))
    coco = json.loads(z.read("annotations.json"))
    assert len(coco["images"]) == 7 and len(coco["annotations"]) == 7
    assert all(z.read(i["file_name"])[:2] == b"\xff\xd8" for i in coco["images"])

    with client.stream("GET", "/api/v1/edge-cases/export", params={"camera_id": camera}) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
        assert "content-length" not in r.headers and r.headers["transfer-encoding"] == "chunked"
        body = r.read()
    assert len(json.loads(zipfile.ZipFile(io.BytesIO(body)).read("annotations.json"))["images"]) == 7


# --- live streams -------------------------------------------------------------------------------------------------


def test_live_streams_are_capped_per_client(app, client, configure, api_config):
    feed = app.state.alert_feed
    configure(api_sse_max_per_client=2)
    url = f"http://127.0.0.1:{api_config[0].api_port}/api/v1/alerts/stream"
    stops, readers = [], []
    try:
        for _ in range(2):
            subscribed, stop = threading.Event(), threading.Event()
            reader = threading.Thread(target=read_events, args=(url, [], subscribed, stop), daemon=True)
            reader.start()
            assert subscribed.wait(15), "the stream did not open"
            stops.append(stop)
            readers.append(reader)
        assert feed.open_by("127.0.0.1") == 2
        r = client.get("/api/v1/alerts/stream")
        assert r.status_code == 429 and "2 live alert streams open" in r.json()["detail"]
        # another client still gets one (the cap is per address), up to the cap on all streams
        other = feed.subscribe(client="192.0.2.1")
        assert other is not None and feed.open_by("192.0.2.1") == 1
        feed.unsubscribe(other)
        # once a stream closes, this client may open another
        stops[0].set()
        readers[0].join(30)
        deadline = time.monotonic() + 30
        while feed.open_by("127.0.0.1") > 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert feed.open_by("127.0.0.1") == 1
        with client.stream("GET", "/api/v1/alerts/stream") as again:
            assert again.status_code == 200
    finally:
        for stop in stops:
            stop.set()


# --- closed reads -------------------------------------------------------------------------------------------------

SCHEMA_AND_METRICS = ["/metrics", "/openapi.json", "/docs", "/redoc"]


@pytest.mark.parametrize("path", SCHEMA_AND_METRICS)
def test_closed_reads_close_the_schema_docs_and_metrics(client, configure, path):
    assert client.get(path).status_code == 200  # open reads: open
    configure(api_read_public=False)
    for headers in ({}, auth("wrong")):
        r = client.get(path, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (path, r.text)
    assert client.get(path, headers=auth()).status_code == 200
    assert client.get("/health/live").status_code == 200  # probes stay open


def test_the_docs_page_reads_the_schema_it_serves(client):
    page = client.get("/docs").text
    assert "/openapi.json" in page
    assert client.get("/openapi.json").json()["paths"]["/api/v1/sql"]


def test_the_dashboard_needs_no_schema_and_sends_its_token():
    script = (Path(__file__).resolve().parents[2] / "api" / "dashboard" / "app.js").read_text()
    assert "openapi" not in script and "/metrics" not in script and "/docs" not in script
    assert "Authorization: `Bearer ${t}`" in script
