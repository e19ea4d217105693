"""The dashboard in a real browser on a real pipeline: Debian's headless Chromium, driven by Selenium through
Debian's chromedriver, against the worker, the API and a gateway started as ``cvops`` processes on the broker
that ``./dev test`` starts, with an embedded ClickHouse in a temporary directory.

The gateway blurs one camera's frames after a few seconds (its ``--fault`` option, as the demo does) and the
worker, with a short reference window, raises a ``data_drift`` alert on its blur; the page must show it
arriving through the live stream, and its evidence when clicked. Every wait is on a condition of the page,
with generous timeouts. Another runs ``cvops incidents`` beside the API, for the incidents, the fleet by
site and acknowledging through the page. ``./dev test -m browser`` runs these tests alone; the screenshots
land in ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.tokens import hash_token
from core.settings import Settings
from core.topology import create_topics
from tests.processes import counts, env_of, stop, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.integration]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CAMERAS = 3
FPS = 4.0
FAULT_AFTER_S = 12  # frames of the last camera are blurred from then on
INSTALL_HINT = "install Debian's chromium and chromium-driver (`./dev setup` does it with apt-get)"


def _browser_binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    missing = [path for path in (chromium, driver) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(f"the browser tests need {' and '.join(missing)}, which are missing: {INSTALL_HINT}")
    return chromium, driver


@pytest.fixture
def browser(tmp_path: Path) -> Iterator:
    chromium, chromedriver = _browser_binaries()  # before importing selenium: a missing browser is the clearer error
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1440,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager (which would download a driver) is never run.
    service = Service(executable_path=chromedriver, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _start(settings: Settings, args: list[str], log: Path, **extra_env: str) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli", *args],
            env={**env_of(settings), **extra_env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _js(driver, script: str, *args):
    """Run ``script`` in the page; None while the page is between documents."""
    from selenium.common.exceptions import WebDriverException

    try:
        return driver.execute_script(script, *args)
    except WebDriverException:
        return None


# The page asks the series route for signal "?" once, on purpose: its 400 answer lists the signals it offers.
SIGNAL_PROBE = "/series?signal=%3F "


def _page_errors(driver) -> list[str]:
    """The browser console's errors (a failed request, an exception, a blocked resource), less the probe."""
    logged = driver.get_log("browser")
    return [e["message"] for e in logged if e["level"] == "SEVERE" and SIGNAL_PROBE not in e["message"]]


def _foreign_requests(driver) -> list[str]:
    """Resources the page loaded from anywhere but this server: there must be none (no CDN)."""
    return _js(
        driver,
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(u => new URL(u).origin !== location.origin)",
    )


def _screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path)), f"could not save {path}"
    return path


# textContent, not innerText: tiles have `content-visibility: auto`, and until the browser has laid out a grid
# just rendered their innerText is '' (seen once in CI: three tiles, status 'ok', text '').
TILES = """return [...document.querySelectorAll('#tiles .tile')].map(t => ({
    camera: t.dataset.camera, status: t.dataset.status, text: t.textContent}))"""
TILES_TEXT = "return document.querySelector('#tiles')?.innerText"
LIVE_ALERT = """return [...document.querySelectorAll('#feed .feed-item[data-source="live"]')]
    .filter(a => a.dataset.camera === arguments[0] && a.dataset.status === 'raised'
                 && a.dataset.type === 'data_drift' && a.dataset.signal === 'blur')
    .map(a => a.dataset.alertId)[0] || null"""
PLOTS = """return [...document.querySelectorAll('#plots figure.plot')].map(f => ({
    signal: f.dataset.signal, points: Number(f.dataset.points), markers: Number(f.dataset.markers),
    canvas: !!f.querySelector('canvas'), failed: f.classList.contains('failed')}))"""

TILE_VIEWS = """return [...document.querySelectorAll('#tiles .tile')]
    .filter(t => { const i = t.querySelector('img.tile-view'); return i && i.complete && i.naturalWidth > 0; })
    .map(t => t.dataset.camera)"""
DRIFT_PLOTS = """return [...document.querySelectorAll('#drift-plots figure.plot')].map(f => ({
    signal: f.dataset.signal, points: Number(f.dataset.points), canvas: !!f.querySelector('canvas'),
    legend: f.querySelector('.u-legend')?.innerText || ''}))"""


def test_fleet_live_alert_and_its_evidence(settings: Settings, tmp_path: Path, browser):
    # A 10-frame reference per camera, so the blurred camera can raise within seconds; the footage is
    # filmed hand-held, so the moved-camera check (meant for fixed cameras) is off, as in the demo.
    # Short KS windows and a sample of the drift statistics every 2 s, so the camera view has them to plot.
    s = settings.model_copy(
        update={"rule_warmup_frames": 10, "monitor_motion_every": 0, "monitor_expected_fps": FPS,
                "monitor_ks_reference": 20, "monitor_ks_window": 10, "monitor_stats_every_s": 2.0, "view_every_s": 2.0}
    )  # fmt: skip
    asyncio.run(create_topics(s))
    logs = {name: tmp_path / f"{name}.log" for name in ("worker", "api", "gateway")}
    procs: list[tuple[subprocess.Popen, Path]] = []
    try:
        for name in ("worker", "api"):
            procs.append((_start(s, [name], logs[name]), logs[name]))
        base = f"http://127.0.0.1:{s.api_port}"
        client = httpx.Client(base_url=base, timeout=10)
        wait_for(lambda: counts(client), "the API", procs)

        # The page, its assets and the redirect from /, all from this server.
        home = client.get("/", follow_redirects=False)
        assert home.status_code in (302, 307) and home.headers["location"].endswith("dashboard/")
        for asset in ("", "app.js", "style.css", "vendor/uPlot.iife.min.js", "vendor/uPlot.min.css"):
            assert client.get(f"/dashboard/{asset}").status_code == 200, asset

        browser.get(f"{base}/")
        assert browser.current_url == f"{base}/dashboard/"
        wait_for(
            lambda: _js(browser, "return document.querySelector('#live').dataset.state") == "open",
            "the page's live alert stream to connect",
            procs,
            timeout_s=60,
        )
        wait_for(
            lambda: "No camera has sent a frame yet" in (_js(browser, TILES_TEXT) or ""),
            "the empty fleet",
            procs,
            timeout_s=30,
        )

        # Cameras start sending; the last one's lens goes soft after FAULT_AFTER_S.
        blurred = f"cam-{CAMERAS}"
        gateway_args = ["gateway", "--cameras", str(CAMERAS), "--fps", str(FPS), "--duration", "600"]
        gateway_args += ["--fault", f"{blurred}:blur:{FAULT_AFTER_S}"]
        procs.append((_start(s, gateway_args, logs["gateway"]), logs["gateway"]))

        cameras = [f"cam-{i + 1}" for i in range(CAMERAS)]
        tiles = wait_for(
            lambda: (t := _js(browser, TILES)) and sorted(x["camera"] for x in t) == cameras and t,
            f"a tile for each of {cameras}",
            procs,
        )
        assert all(t["status"] in ("ok", "warning", "alert", "offline") and "fps" in t["text"] for t in tiles), tiles

        # Filter and sort, as a person would.
        from selenium.webdriver.common.keys import Keys
        from selenium.webdriver.support.ui import Select

        box = browser.find_element("id", "filter")
        box.send_keys(blurred)
        wait_for(lambda: [t["camera"] for t in _js(browser, TILES) or []] == [blurred], "the filter", procs, 10)
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(Keys.DELETE)
        wait_for(lambda: len(_js(browser, TILES) or []) == CAMERAS, "the filter cleared", procs, 10)
        Select(browser.find_element("id", "sort")).select_by_value("name")
        wait_for(lambda: [t["camera"] for t in _js(browser, TILES) or []] == cameras, "sorting by name", procs, 10)
        # Each tile shows what its camera sees: the latest view the worker sent, loaded in the page.
        wait_for(lambda: sorted(_js(browser, TILE_VIEWS) or []) == cameras, "a view in every tile", procs, 60)
        _screenshot(browser, "dashboard-fleet.png")

        # The alert arrives through the live stream (data-source="live"), not from a stored read.
        alert_id = wait_for(
            lambda: _js(browser, LIVE_ALERT, blurred), f"a live data_drift alert on the blur of {blurred}", procs
        )
        item = f'#feed .feed-item[data-alert-id="{alert_id}"][data-status="raised"]'
        browser.find_element("css selector", item).click()

        # Its evidence: what the alert carries, and the camera's plots around it with the alert marked.
        wait_for(
            lambda: _js(browser, "return document.querySelector('#evidence')?.dataset.alertId") == alert_id,
            "the evidence view",
            procs,
            timeout_s=30,
        )
        details = wait_for(
            lambda: _js(browser, "return document.querySelector('#evidence-details dl.details')?.innerText"),
            "the alert's details",
            procs,
            timeout_s=30,
        )
        for expected in ("data_drift", blurred, "blur", "threshold", alert_id):
            assert expected in details, f"{expected!r} missing from the evidence:\n{details}"
        frame_ids = _js(browser, "return [...document.querySelectorAll('#evidence-frames code')].map(c => c.innerText)")
        assert frame_ids and all(f.startswith(f"{blurred}:") for f in frame_ids), frame_ids
        value = float(_js(browser, "return document.querySelector('#evidence-details [data-value]').dataset.value"))
        threshold = float(
            _js(browser, "return document.querySelector('#evidence-details [data-threshold]').dataset.threshold")
        )
        assert value < threshold, "a blurred lens lowers the blur statistic below its reference range"
        # The frames themselves: the worker's thumbnails of them, stored and served with the boxes drawn in.
        thumbs = wait_for(
            lambda: _js(
                browser,
                "return [...document.querySelectorAll('#evidence-frames .thumb img')]"
                ".filter(i => i.complete && i.naturalWidth > 0).map(i => i.alt)",
            ),
            "the evidence thumbnails, loaded",
            procs,
            timeout_s=60,
        )
        assert all(t.startswith(f"{blurred}:") for t in thumbs), thumbs

        plots = wait_for(
            lambda: (p := _js(browser, PLOTS)) and all(x["points"] >= 1 for x in p) and p,
            "the camera's plots around the alert, with data",
            procs,
            timeout_s=120,
        )
        signals = {p["signal"] for p in plots}
        assert {"brightness", "blur", "frames", "inference_ms", "detections"} <= signals, signals
        assert all(p["canvas"] and not p["failed"] for p in plots), plots
        assert all(p["markers"] >= 1 for p in plots), f"the alert is not marked on every plot: {plots}"
        _screenshot(browser, "dashboard.png")

        # The camera's own view: its status follows the alert, which is listed among its active ones.
        browser.find_element("css selector", f'#evidence-details a[href="#/camera/{blurred}"]').click()
        wait_for(
            lambda: _js(
                browser,
                "return [...document.querySelectorAll('#cam-active a.alert-row')]"
                ".some(a => a.getAttribute('href').includes(arguments[0]))",
                alert_id,
            ),
            "the alert among the camera's active alerts",
            procs,
            timeout_s=60,
        )
        wait_for(lambda: (p := _js(browser, PLOTS)) and len(p) >= 5, "the camera's plots", procs, timeout_s=60)
        wait_for(
            lambda: _js(browser, "return document.querySelector('#cam-views .view-latest img')?.naturalWidth"),
            "the camera's latest view",
            procs,
            timeout_s=30,
        )
        plotted = lambda: {p["signal"] for p in _js(browser, PLOTS) or []}  # noqa: E731
        wait_for(lambda: "classes" in plotted(), "the detections per class", procs, timeout_s=30)
        # Its drift statistics over time, each with its threshold: the blur's distribution test among them.
        drift = wait_for(
            lambda: (p := _js(browser, DRIFT_PLOTS)) and "ks_holm:blur_distribution" in {x["signal"] for x in p} and p,
            "the camera's drift statistics plotted",
            procs,
            timeout_s=60,
        )
        assert all(p["canvas"] and p["points"] >= 1 for p in drift), drift
        assert all("threshold" in p["legend"] for p in drift), drift
        _screenshot(browser, "dashboard-camera.png")
        browser.execute_script("document.querySelector('#drift-plots').scrollIntoView()")
        _screenshot(browser, "dashboard-drift.png")

        browser.find_element("css selector", "a.brand").click()
        wait_for(
            lambda: any(t["camera"] == blurred and t["status"] == "alert" for t in _js(browser, TILES) or []),
            f"{blurred}'s tile turning to 'alert'",
            procs,
            timeout_s=60,
        )
        assert not _foreign_requests(browser), _foreign_requests(browser)
        assert not _page_errors(browser)
    finally:
        for proc, _ in reversed(procs):
            stop(proc)


def test_token_pasted_in_the_page_opens_a_private_api(settings: Settings, tmp_path: Path, browser):
    token = "dashboard-test-token"
    asyncio.run(create_topics(settings))
    log = tmp_path / "api.log"
    api = _start(settings, ["api"], log, CVOPS_API_READ_PUBLIC="false", CVOPS_API_TOKENS=hash_token(token))
    procs = [(api, log)]
    try:
        base = f"http://127.0.0.1:{settings.api_port}"
        client = httpx.Client(base_url=base, timeout=10, headers={"Authorization": f"Bearer {token}"})
        wait_for(lambda: counts(client), "the API", procs)

        browser.get(f"{base}/dashboard/")
        banner = wait_for(
            lambda: _js(browser, "const b = document.querySelector('#banner'); return b.hidden ? null : b.innerText"),
            "the page asking for a token",
            procs,
            timeout_s=30,
        )
        assert "token" in banner.lower()
        wait_for(
            lambda: _js(browser, "return document.querySelector('#live').dataset.state") == "auth",
            "the live stream refused for want of a token",
            procs,
            timeout_s=30,
        )

        browser.find_element("id", "token").send_keys(token)
        browser.find_element("css selector", "#token-form button[type=submit]").click()
        wait_for(
            lambda: _js(browser, "return document.querySelector('#live').dataset.state") == "open",
            "the live stream to connect with the token",
            procs,
            timeout_s=30,
        )
        wait_for(
            lambda: "No camera has sent a frame yet" in (_js(browser, TILES_TEXT) or ""),
            "the fleet read with the token",
            procs,
            timeout_s=30,
        )
        wait_for(lambda: _js(browser, "return document.querySelector('#banner').hidden"), "the banner gone", procs, 10)
        assert _js(browser, "return localStorage.getItem('cvops.apiToken')") == token

        # A reload keeps the token: the page opens straight away.
        browser.refresh()
        wait_for(
            lambda: _js(browser, "return document.querySelector('#live').dataset.state") == "open",
            "the live stream after a reload",
            procs,
            timeout_s=30,
        )
        errors = [e for e in _page_errors(browser) if " 401 " not in e and "(Unauthorized)" not in e]
        assert not errors, json.dumps(errors, indent=1)
    finally:
        stop(api)


async def _publish_fleet(settings: Settings, n: int, alerting: set[int], silent: set[int]) -> None:
    """One frame's metrics for each of ``n`` cameras (those in ``silent`` ten minutes old), and a raised alert
    for each camera in ``alerting``, on the topics the worker writes: the API's store writer stores them."""
    from aiokafka import AIOKafkaProducer

    from core.contracts import Alert, FrameMetrics, encode_record

    now = time.time()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        sends = []
        for i in range(1, n + 1):
            camera = f"cam-{i}"
            at = now - 600 if i in silent else now
            metrics = FrameMetrics(
                frame_id=f"{camera}:1:0",
                camera_id=camera,
                seq=0,
                captured_at=at,
                processed_at=at,
                model_name="nanodet-m",
                model_version="1.0.0",
                encoding="jpeg",
                bytes=20_000,
                width=640,
                height=360,
                aspect_ratio=640 / 360,
                brightness=100.0 + i % 50,
                blur=200.0,
                inference_ms=20.0,
                detections=i % 4,
            )
            sends.append(await producer.send(settings.topic("metrics"), encode_record(metrics), key=camera.encode()))
            if i in alerting:
                alert = Alert(
                    alert_id=f"fleet-{i}",
                    type="data_drift",
                    camera_id=camera,
                    signal="blur",
                    value=5.0,
                    threshold=50.0,
                    window=10,
                    evidence_frame_ids=[metrics.frame_id],
                    raised_at=now,
                    message=f"blur of camera {camera} is 5.0, below its reference range 50.0 to 600.0",
                )
                sends.append(await producer.send(settings.topic("alerts"), encode_record(alert), key=camera.encode()))
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


RENDER_MS = """const done = arguments[arguments.length - 1];
    const [selector, value] = [arguments[0], arguments[1]];
    const el = document.querySelector(selector);
    const t0 = performance.now();
    el.value = value;
    el.dispatchEvent(new Event(el.tagName === 'SELECT' ? 'change' : 'input'));
    requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now() - t0)));"""


def test_fleet_of_500_cameras_renders_in_one_pass(settings: Settings, tmp_path: Path, browser):
    n, alerting, silent = 500, set(range(7, 501, 20)), set(range(3, 501, 10))
    asyncio.run(create_topics(settings))
    log = tmp_path / "api.log"
    procs = [(_start(settings, ["api"], log), log)]
    try:
        base = f"http://127.0.0.1:{settings.api_port}"
        client = httpx.Client(base_url=base, timeout=30)
        wait_for(lambda: counts(client), "the API", procs)
        asyncio.run(_publish_fleet(settings, n, alerting, silent))
        fleet = wait_for(
            lambda: (
                (c := client.get("/api/v1/cameras").json())
                and len(c) == n
                and sum(x["active_alerts"] for x in c) == len(alerting)
                and c
            ),
            f"{n} cameras and {len(alerting)} alerts in the store",
            procs,
        )
        expected = {c["camera_id"]: c["status"] for c in fleet}
        assert {"alert", "offline", "ok"} <= set(expected.values())

        browser.get(f"{base}/dashboard/")
        tiles = wait_for(lambda: (t := _js(browser, TILES)) and len(t) == n and t, f"{n} tiles", procs, 60)
        assert {t["camera"]: t["status"] for t in tiles} == expected
        assert [t["status"] for t in tiles[: len(alerting)]] == ["alert"] * len(alerting), "worst first"

        # Filtering and sorting re-render the grid in one pass: well under a second even here.
        timings = {}
        browser.set_script_timeout(30)
        timings["filter"] = browser.execute_async_script(RENDER_MS, "#filter", "cam-12")
        shown = sorted(t["camera"] for t in _js(browser, TILES))
        assert shown == sorted(["cam-12", *(f"cam-12{d}" for d in range(10))]), shown
        timings["unfilter"] = browser.execute_async_script(RENDER_MS, "#filter", "")
        timings["sort"] = browser.execute_async_script(RENDER_MS, "#sort", "name")
        names = [t["camera"] for t in _js(browser, TILES)]
        assert names == [f"cam-{i}" for i in range(1, n + 1)], "natural order: cam-2 before cam-10"
        assert all(ms < 1000 for ms in timings.values()), timings
        print(f"500-tile render times, ms: {json.dumps({k: round(v) for k, v in timings.items()})}")

        # No request per tile: the fleet is read with one /cameras call per refresh.
        per_camera = _js(
            browser,
            "return performance.getEntriesByType('resource').map(e => new URL(e.name).pathname)"
            ".filter(p => p.startsWith('/api/v1/cameras/'))",
        )
        assert per_camera == [], per_camera
        assert not _page_errors(browser)
        _screenshot(browser, "dashboard-500.png")
    finally:
        for proc, _ in procs:
            stop(proc)


async def _publish_edge_cases(settings: Settings, n: int) -> list[str]:
    """``n`` edge cases on the evidence topic, as a worker publishes them; their ids."""
    import base64

    import cv2
    import numpy as np
    from aiokafka import AIOKafkaProducer

    from core.contracts import Evidence, encode_record

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    ids = []
    try:
        for i in range(n):
            image = cv2.imencode(".jpg", np.full((90, 160, 3), 40 + 20 * i, np.uint8))[1].tobytes()
            e = Evidence(
                alert_id=f"edge-{i}", camera_id=f"cam-{i % 2 + 1}", frame_id=f"cam-{i % 2 + 1}:0:{i}",
                role="edge_case", reason="outlier" if i % 2 else "low_confidence", score=0.3 + i / 10,
                captured_at=time.time() - i, width=160, height=90, source_width=640, source_height=360,
                image_b64=base64.b64encode(image).decode(),
            )  # fmt: skip
            await producer.send_and_wait(settings.topic("evidence"), encode_record(e), key=e.camera_id.encode())
            ids.append(e.alert_id)
    finally:
        await producer.stop()
    return ids


def test_edge_case_gallery_shows_thumbnails_filters_and_exports(settings: Settings, tmp_path: Path, browser):
    asyncio.run(create_topics(settings))
    log = tmp_path / "api.log"
    procs = [(_start(settings, ["api"], log), log)]
    try:
        base = f"http://127.0.0.1:{settings.api_port}"
        client = httpx.Client(base_url=base, timeout=30)
        wait_for(lambda: counts(client), "the API", procs)
        ids = asyncio.run(_publish_edge_cases(settings, 6))
        wait_for(lambda: len(client.get("/api/v1/edge-cases").json()) == 6, "6 edge cases in the store", procs)

        browser.get(f"{base}/dashboard/")
        browser.find_element("css selector", "#edge-link").click()
        loaded = (
            "return [...document.querySelectorAll('#edge-grid figure')]"
            ".filter(f => { const i = f.querySelector('img'); return i.complete && i.naturalWidth > 0; })"
            ".map(f => f.dataset.id)"
        )
        shown = wait_for(lambda: (s := _js(browser, loaded)) and len(s) == 6 and s, "6 loaded thumbnails", procs, 60)
        assert sorted(shown) == sorted(ids)

        reason = browser.find_element("css selector", "#edge-reason")
        browser.execute_script(
            "arguments[0].value = 'outlier'; arguments[0].dispatchEvent(new Event('change'))", reason
        )
        outliers = wait_for(lambda: (s := _js(browser, loaded)) and len(s) == 3 and s, "the 3 outliers", procs, 60)
        assert sorted(outliers) == sorted(i for n, i in enumerate(ids) if n % 2)

        # Select one and export: the page asks for exactly that one.
        browser.find_element("css selector", f'#edge-grid .pick[value="{outliers[0]}"]').click()
        browser.find_element("css selector", "#edge-export").click()
        asked = wait_for(
            lambda: [
                u
                for u in _js(browser, "return performance.getEntriesByType('resource').map(e => e.name)")
                if "/edge-cases/export" in u
            ],
            "the export request",
            procs,
            30,
        )
        assert f"edge_case_id={outliers[0]}" in asked[0] and "reason=outlier" in asked[0], asked
        assert not _page_errors(browser)
        _screenshot(browser, "dashboard-edge-cases.png")
    finally:
        for proc, _ in procs:
            stop(proc)


# Five cameras of two sites, as their gateways declare them; north's three share a tag.
SITES = {"n1": "north", "n2": "north", "n3": "north", "s1": "south", "s2": "south"}
TAGS = {"n1": {"side": "east"}, "n2": {"side": "east"}, "n3": {"side": "east"}, "s1": {"side": "west"}, "s2": {}}


def _alert(camera: str, signal: str, value: float, at: float, **changes):
    from core.contracts import Alert

    fields = dict(alert_id=f"{camera}-{signal}", type="data_drift", camera_id=camera, signal=signal, value=value,
                  threshold=80.0, window=60, evidence_frame_ids=[f"{camera}:1:{k}" for k in (28, 29)], raised_at=at,
                  message=f"{signal} of camera {camera} is {value}, below its reference range")  # fmt: skip
    return Alert(**{**fields, **changes})


async def _send(settings: Settings, records: list[tuple[str, str, object]]) -> None:
    """(topic, key, record) on the broker, in order, as the gateways and the worker publish them."""
    from aiokafka import AIOKafkaProducer

    from core.contracts import encode_record

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for topic, key, record in records:
            await producer.send_and_wait(settings.topic(topic), encode_record(record), key=key.encode())
    finally:
        await producer.stop()


def _fleet_records(now: float) -> list[tuple[str, str, object]]:
    """The inventory, ten minutes of each camera's frames (north's three darken in the last three), and the
    evidence thumbnails of the alerts of :func:`_alert` that the test raises."""
    import base64

    import cv2
    import numpy as np

    from core.contracts import CameraInfo, Evidence, FrameMetrics

    out: list[tuple[str, str, object]] = []
    for cam, site in SITES.items():
        info = CameraInfo(camera_id=cam, source="gateway", site=site, tags=TAGS[cam], gateway=f"gw-{site}")
        out.append(("cameras", f"gateway:{cam}", info))
    for k in range(30):
        at = now - 600 + 20 * k
        for i, cam in enumerate(SITES):
            dark = cam.startswith("n") and k >= 21
            out.append(("metrics", cam, FrameMetrics(
                frame_id=f"{cam}:1:{k}", camera_id=cam, seq=k, captured_at=at, processed_at=at, model_name="nanodet-m",
                model_version="1.0.0", encoding="jpeg", bytes=20_000, width=640, height=360, aspect_ratio=640 / 360,
                brightness=(40.0 if dark else 120.0) + i, blur=200.0, inference_ms=20.0, detections=1,
            )))  # fmt: skip
    for cam, signal in [("s1", "blur"), ("n1", "brightness"), ("n2", "brightness"), ("n3", "brightness")]:
        for k in (28, 29):
            image = cv2.imencode(".jpg", np.full((90, 160, 3), 30 + 5 * k, np.uint8))[1].tobytes()
            out.append(("evidence", cam, Evidence(
                alert_id=f"{cam}-{signal}", camera_id=cam, frame_id=f"{cam}:1:{k}", captured_at=now - 600 + 20 * k,
                width=160, height=90, source_width=640, source_height=360, image_b64=base64.b64encode(image).decode(),
            )))  # fmt: skip
    return out


INCIDENT_ROWS = """return [...document.querySelectorAll('#incident-rows tr[data-incident]')].map(r => ({
    id: r.dataset.incident, kind: r.dataset.kind, open: r.dataset.open === 'true', site: r.dataset.site,
    cameras: Number(r.dataset.cameras), text: r.innerText}))"""
GROUPS = """return Object.fromEntries([...document.querySelectorAll('#tiles .tile-group')].map(g =>
    [g.dataset.group, [...g.querySelectorAll('.tile')].map(t => t.dataset.camera)]))"""
MEMBERS = """return [...document.querySelectorAll('#inc-members .member')].map(m => {
    const i = m.querySelector('.member-evidence img');
    return {camera: m.dataset.camera, loaded: !!(i && i.complete && i.naturalWidth > 0), text: m.innerText}; })"""
INCIDENT_PLOTS = """return [...document.querySelectorAll('#inc-plots figure.plot')].map(f => ({
    signal: f.dataset.signal, cameras: Number(f.dataset.cameras), points: Number(f.dataset.points),
    markers: Number(f.dataset.markers), canvas: !!f.querySelector('canvas'), legend: f.innerText}))"""


def _text(browser, selector: str) -> str:
    """The text of the first element ``selector`` matches; '' when none does (yet)."""
    return _js(browser, "return document.querySelector(arguments[0])?.textContent || ''", selector) or ""


def _act(browser, panel: str, action: str, **fields: str) -> None:
    """Press ``action``'s button in ``panel``, fill the form's ``fields`` and send it."""
    browser.find_element("css selector", f'{panel} button[data-act="{action}"]').click()
    for name, value in fields.items():
        box = browser.find_element("css selector", f'{panel} .act-form [name="{name}"]')
        if box.tag_name == "select":
            from selenium.webdriver.support.ui import Select

            Select(box).select_by_value(value)
        else:
            box.clear()
            box.send_keys(value)
    browser.find_element("css selector", f"{panel} .act-go").click()


def test_incidents_sites_and_an_acknowledgement_through_the_page(settings: Settings, tmp_path: Path, browser):
    """The inventory groups the fleet by site; ``cvops incidents`` makes a device incident and an environment
    incident of north's three darkening cameras from alerts on the broker; the page lists them open first and
    shows the environment one with its members' evidence side by side and their brightness in one plot; a
    person acknowledges it, and silences a camera, through the page, with a token typed there."""
    from selenium.webdriver.support.ui import Select

    token = "incident-test-token"
    s = settings.model_copy(update={"incident_window_s": 3.0})
    asyncio.run(create_topics(s))
    logs = {name: tmp_path / f"{name}.log" for name in ("api", "incidents")}
    procs = [
        (_start(s, ["api"], logs["api"], CVOPS_API_TOKENS=hash_token(token)), logs["api"]),
        (_start(s, ["incidents"], logs["incidents"]), logs["incidents"]),
    ]
    try:
        base = f"http://127.0.0.1:{s.api_port}"
        client = httpx.Client(base_url=base, timeout=30)
        wait_for(lambda: counts(client), "the API", procs)
        wait_for(lambda: "correlating alerts" in logs["incidents"].read_text(), "the incidents processor", procs)
        now = time.time()
        asyncio.run(_send(s, _fleet_records(now)))
        incidents = lambda: client.get("/api/v1/incidents").json()  # noqa: E731
        # The lone blur first, then north's dusk: the device incident opens before the environment one.
        asyncio.run(_send(s, [("alerts", "s1", _alert("s1", "blur", 5.0, now - 30))]))
        wait_for(lambda: len(incidents()) == 1, "the device incident of s1", procs)
        dark = [_alert(c, "brightness", 40.0, now - 20 + i) for i, c in enumerate(["n1", "n2", "n3"])]
        symptom = _alert("n1", "brightness_distribution", 1e-6, now - 19, status="suppressed", threshold=0.01,
                         caused_by=dark[0].alert_id, message="symptom of data_drift:brightness")  # fmt: skip
        asyncio.run(_send(s, [("alerts", a.camera_id, a) for a in [*dark, symptom]]))
        listed = wait_for(lambda: (i := incidents()) and len(i) == 2 and i, "the environment incident", procs)
        env = next(i for i in listed if i["kind"] == "environment")
        device = next(i for i in listed if i["kind"] == "device")
        assert env["cameras"] == ["n1", "n2", "n3"] and env["site"] == "north", env
        wait_for(lambda: len(client.get("/api/v1/inventory").json()) == len(SITES), "the inventory", procs)
        wait_for(lambda: len(client.get("/api/v1/cameras").json()) == len(SITES), "the cameras in the store", procs)

        # The fleet, grouped by site, and filtered by site and by tag.
        browser.get(f"{base}/dashboard/")
        wait_for(
            lambda: _js(browser, GROUPS) == {"north": ["n1", "n2", "n3"], "south": ["s1", "s2"]},
            "the tiles grouped by site",
            procs,
            timeout_s=60,
        )
        Select(browser.find_element("id", "site-filter")).select_by_value("south")
        wait_for(lambda: _js(browser, GROUPS) == {"south": ["s1", "s2"]}, "the south site alone", procs, 10)
        Select(browser.find_element("id", "site-filter")).select_by_value("")
        Select(browser.find_element("id", "tag-filter")).select_by_value("side=east")
        wait_for(lambda: _js(browser, GROUPS) == {"north": ["n1", "n2", "n3"]}, "the side=east cameras", procs, 10)
        Select(browser.find_element("id", "tag-filter")).select_by_value("")
        Select(browser.find_element("id", "group")).select_by_value("tag:side")
        wait_for(
            lambda: _js(browser, GROUPS) == {"east": ["n1", "n2", "n3"], "west": ["s1"], "": ["s2"]},
            "the tiles grouped by the side tag",
            procs,
            10,
        )
        Select(browser.find_element("id", "group")).select_by_value("site")
        _screenshot(browser, "dashboard-sites.png")

        # The symptom is folded under its cause in the alert feed.
        folded = """const cause = document.querySelector(
                `#feed li.feed-entry > .feed-item[data-alert-id="${arguments[0]}"]`);
            return cause ? [...cause.parentElement.querySelectorAll('ol.symptoms .feed-item')]
                .map(a => a.dataset.causedBy) : null"""
        assert wait_for(lambda: _js(browser, folded, dark[0].alert_id), "the symptom under its cause", procs, 60) == [
            dark[0].alert_id
        ]

        # The incidents, open first; the header counts them.
        wait_for(lambda: _js(browser, "return document.querySelector('#open-incidents').dataset.open") == "2",
                 "two open incidents in the header", procs, 60)  # fmt: skip
        browser.find_element("id", "incidents-link").click()
        rows = wait_for(lambda: (r := _js(browser, INCIDENT_ROWS)) and len(r) == 2 and r, "the incidents", procs, 30)
        assert [(r["kind"], r["open"], r["cameras"]) for r in rows] == [("environment", True, 3), ("device", True, 1)]
        assert rows[0]["site"] == "north" and "brightness" in rows[0]["text"] and "site:north" in rows[0]["text"]

        # One incident: its members' evidence side by side, and their brightness in one plot.
        browser.find_element("css selector", f'#incident-rows tr[data-incident="{env["incident_id"]}"] td').click()
        members = wait_for(
            lambda: (m := _js(browser, MEMBERS)) and len(m) == 3 and all(x["loaded"] for x in m) and m,
            "the three members' evidence thumbnails, loaded",
            procs,
            60,
        )
        assert [m["camera"] for m in members] == ["n1", "n2", "n3"]
        assert all("side=east" in m["text"] and "brightness" in m["text"] for m in members), members
        plots = wait_for(
            lambda: (p := _js(browser, INCIDENT_PLOTS)) and any(x["points"] >= 1 for x in p) and p,
            "the shared signal plotted",
            procs,
            60,
        )
        shared = next(p for p in plots if p["signal"] == "shared:brightness")
        assert shared["cameras"] == 3 and shared["canvas"] and shared["markers"] >= 3, shared
        assert all(c in shared["legend"] for c in ("n1", "n2", "n3")), shared
        _screenshot(browser, "dashboard-incident.png")

        # Acknowledge it: the page asks for a name and a token; a wrong token is refused and asked again.
        panel = "#inc-actions"
        _act(browser, panel, "acknowledge", by="ann", comment="dusk on the east side", token="wrong-token")
        wait_for(lambda: "refused" in _text(browser, f"{panel} .act-error"), "the wrong token refused", procs, 30)
        browser.find_element("css selector", f'{panel} .act-form [name="token"]').send_keys(token)
        browser.find_element("css selector", f"{panel} .act-go").click()
        held = wait_for(lambda: _text(browser, f"{panel} .held.acknowledged"), "who acknowledged, and when", procs, 30)
        ack = client.get(f"/api/v1/incidents/{env['incident_id']}").json()["acknowledged"]
        assert ack["by"] == "ann" and ack["comment"] == "dusk on the east side", ack
        shown_at = _js(browser, f"return document.querySelector('{panel} .held.acknowledged').dataset.at")
        assert "ann" in held and "dusk on the east side" in held and float(shown_at) == ack["at"], held
        assert hash_token(token)[:8] in ack["via"]
        # The token stays in this tab's sessionStorage: never saved for good, never in a URL.
        assert _js(browser, "return sessionStorage.getItem('cvops.actionToken')") == token
        assert _js(browser, "return localStorage.getItem('cvops.apiToken')") is None
        urls = _js(browser, "return [location.href, ...performance.getEntriesByType('resource').map(e => e.name)]")
        assert not [u for u in urls if token in u], urls
        _screenshot(browser, "dashboard-acknowledged.png")

        # Silence a camera from its own view: the token typed before is used, the name remembered.
        browser.get(f"{base}/dashboard/#/camera/s1")
        wait_for(lambda: "south" in _text(browser, "#cam-inventory"), "s1's inventory", procs, 30)
        _act(browser, "#cam-actions", "silence", for_s="3600")
        wait_for(lambda: "ann" in _text(browser, "#cam-actions .held.silenced"), "who silenced s1", procs, 30)
        silenced = client.get("/api/v1/cameras/s1/inventory").json()["silenced"]
        assert silenced["by"] == "ann" and 3590 < silenced["until"] - silenced["at"] <= 3600, silenced
        _screenshot(browser, "dashboard-camera-silenced.png")

        # North's alerts resolve: the incident resolves, and the still open device incident is listed first.
        resolved = [a.model_copy(update={"status": "resolved", "raised_at": time.time()}) for a in dark]
        asyncio.run(_send(s, [("alerts", a.camera_id, a) for a in resolved]))
        browser.find_element("id", "incidents-link").click()
        rows = wait_for(
            lambda: (r := _js(browser, INCIDENT_ROWS)) and len(r) == 2 and not r[1]["open"] and r,
            "the environment incident resolved, after the open one",
            procs,
            60,
        )
        assert [(r["id"], r["open"]) for r in rows] == [(device["incident_id"], True), (env["incident_id"], False)]
        assert "ann" in rows[1]["text"], rows[1]
        _screenshot(browser, "dashboard-incidents.png")
        browser.find_element("css selector", "a.brand").click()
        wait_for(lambda: "silenced" in _text(browser, '.tile[data-camera="s1"]'), "s1's tile silenced", procs, 30)
        assert not _foreign_requests(browser)
        errors = [e for e in _page_errors(browser) if " 401 " not in e and "(Unauthorized)" not in e]
        assert not errors, json.dumps(errors, indent=1)
    finally:
        for proc, _ in reversed(procs):
            stop(proc)


AGREEMENT_ROWS = """return [...document.querySelectorAll('#agreement-totals tr[data-pair]')].map(r => ({
    pair: r.dataset.pair, label: r.dataset.class, f1: Number(r.dataset.f1), text: r.innerText}))"""
AGREEMENT_PLOTS = """return [...document.querySelectorAll('#agreement-plots figure.plot')].map(f => ({
    caption: f.querySelector('figcaption').innerText, points: Number(f.dataset.points),
    canvas: !!f.querySelector('canvas'), legend: f.querySelector('.u-legend')?.innerText || ''}))"""


def test_the_camera_view_shows_the_challenger_against_the_champion(settings: Settings, tmp_path: Path, browser):
    """A camera whose challenger saw some of its frames in shadow: its view lists the challenger against the
    champion (all classes and per class) as the API computes them from the store, and plots them over time; and
    the champion's expected precision, as the worker samples it, beside the precision labels measured."""
    from core.contracts import DriftStatistic, FrameMetrics
    from tests.store.records import shadow_prediction

    asyncio.run(create_topics(settings))
    log = tmp_path / "api.log"
    procs = [(_start(settings, ["api"], log), log)]
    try:
        base = f"http://127.0.0.1:{settings.api_port}"
        client = httpx.Client(base_url=base, timeout=30)
        wait_for(lambda: counts(client), "the API", procs)
        now = time.time()
        records: list[tuple[str, str, object]] = []
        for k in range(8):  # a frame every 30 s; the challenger saw every other one
            at = now - 300 + 30 * k
            records.append(("metrics", "sh1", FrameMetrics(
                frame_id=f"sh1:1:{k}", camera_id="sh1", seq=k, captured_at=at, processed_at=at, model_name="nanodet-m",
                model_version="1", encoding="jpeg", bytes=20_000, width=640, height=360, aspect_ratio=640 / 360,
                brightness=120.0, blur=200.0, inference_ms=20.0, detections=1, drift=[] if k < 7 else [
                    DriftStatistic(detector="cbpe", signal=signal, statistic=value, threshold=threshold, drift=False,
                                   window=window)
                    for signal, value, threshold, window in [
                        ("expected_precision", 0.31, 0.22, 412), ("expected_precision_low", 0.25, 0.22, 412),
                        ("expected_precision_high", 0.37, 0.22, 412), ("measured_precision", 0.28, 0.3, 40),
                        ("measured_f1", 0.35, 0.0, 40)]],
            )))  # fmt: skip
            if k % 2:
                records.append(("shadow-predictions", "sh1", shadow_prediction("sh1", k, at)))
        asyncio.run(_send(settings, records))
        shadow = [r for t, _, r in records if t == "shadow-predictions"]
        # the direct computation, over every class: the champion's boxes, the challenger's, and those matched
        champion, challenger = (sum(sum(getattr(a, f) for a in r.agreement) for r in shadow) for f in
                                ("champion", "challenger"))  # fmt: skip
        matched = sum(a.matched for r in shadow for a in r.agreement)
        f1 = 2 * matched / (champion + challenger)
        totals = wait_for(
            lambda: (t := client.get("/api/v1/cameras/sh1/agreement").json()["totals"]) and t[0]["frames"] == 4 and t,
            "the shadow predictions in the store",
            procs,
        )
        assert totals[0]["all"]["f1"] == pytest.approx(f1)

        browser.get(f"{base}/dashboard/#/camera/sh1")
        fact = wait_for(lambda: "expected precision" in (t := _text(browser, "#cam-facts")) and t, "estimate", procs)
        assert "0.31 (0.25–0.37), floor 0.22; measured 0.28 (expected 0.3), F1 0.35 on 40 labelled frames" in fact
        rows = wait_for(lambda: _js(browser, AGREEMENT_ROWS), "the champion and challenger table", procs, 60)
        assert [r["label"] for r in rows] == ["all classes", "car", "person"], rows
        assert {r["pair"] for r in rows} == {"nanodet-m@1 yolov4-tiny@1.0.0"}
        assert rows[0]["f1"] == pytest.approx(f1), rows[0]
        assert rows[1]["f1"] == 0 and rows[2]["f1"] == 1, rows  # cars only the challenger saw; people both
        plots = wait_for(lambda: _js(browser, AGREEMENT_PLOTS), "the agreement plot", procs, 30)
        assert len(plots) == 1 and plots[0]["canvas"] and plots[0]["points"] >= 2, plots
        assert "yolov4-tiny@1.0.0 against nanodet-m@1" in plots[0]["caption"] and "F1" in plots[0]["legend"], plots
        browser.execute_script("document.querySelector('#agreement-totals').scrollIntoView()")
        _screenshot(browser, "dashboard-agreement.png")
        assert not _page_errors(browser) and not _foreign_requests(browser)
    finally:
        for proc, _ in reversed(procs):
            stop(proc)
