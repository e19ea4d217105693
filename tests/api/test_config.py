"""Fleet and camera settings through the API: written on the config topic, read back, validated."""

from __future__ import annotations

import asyncio
import time

import httpx
from aiokafka import AIOKafkaConsumer

from core.contracts import CameraConfig, decode_record
from tests.api.conftest import TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def wait_until(check, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


async def config_records(settings, keys: set[str]) -> dict[str, CameraConfig]:
    """The latest record of each of ``keys`` on the config topic, read from the start to the end (once every key
    has been seen, until a poll finds nothing more). Other tests share the topic (other keys, tombstones of deleted
    overrides), so records of other keys are passed over."""
    consumer = AIOKafkaConsumer(
        settings.topic("config"), bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    out: dict[str, CameraConfig] = {}
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            if not batches and set(out) == keys:
                break
            for batch in batches.values():
                for r in batch:
                    if r.key is not None and r.key.decode() in keys and r.value:
                        out[r.key.decode()] = decode_record(CameraConfig, r.value)
    finally:
        await consumer.stop()
    return out


def test_a_camera_override_is_published_and_layers_over_the_fleet(client: httpx.Client, api_config):
    settings, _ = api_config
    r = client.put("/api/v1/config/fleet", json={"expected_fps": 12.5, "rule_consecutive": 4}, headers=AUTH)
    assert r.status_code == 202, r.text
    r = client.put("/api/v1/config/cameras/cfg-cam-1", json={"rule_consecutive": 2}, headers=AUTH)
    assert r.status_code == 202, r.text
    view = client.get("/api/v1/config/cameras/cfg-cam-1").json()
    assert view["effective"]["values"]["consecutive"] == 2  # the camera's own
    assert view["effective"]["values"]["expected_fps"] == 12.5  # the fleet's
    assert view["effective"]["values"]["warmup"] == settings.rule_warmup_frames  # the workers'
    assert "consecutive" in view["effective"]["live"] and "warmup" not in view["effective"]["live"]

    by_key = asyncio.run(config_records(settings, {"fleet", "cfg-cam-1"}))
    assert by_key["fleet"].overrides.expected_fps == 12.5
    assert by_key["cfg-cam-1"].overrides.model_dump(exclude_none=True) == {"rule_consecutive": 2}

    relearn = client.post("/api/v1/config/cameras/cfg-cam-1/relearn", headers=AUTH).json()
    assert relearn["relearn_after"] > 0 and relearn["overrides"]["rule_consecutive"] == 2
    assert client.delete("/api/v1/config/cameras/cfg-cam-1", headers=AUTH).status_code == 202
    wait_until(lambda: "cfg-cam-1" not in client.get("/api/v1/config").json()["cameras"])
    assert client.delete("/api/v1/config/cameras/cfg-cam-1", headers=AUTH).status_code == 404


def test_bad_config_requests_are_refused_with_reasons(client: httpx.Client):
    assert client.put("/api/v1/config/fleet", json={"expected_fps": 5}).status_code == 401
    r = client.put("/api/v1/config/cameras/cam-1", json={"ks_alpha": 2}, headers=AUTH)
    assert r.status_code == 422 and "ks_alpha" in r.text
    r = client.put("/api/v1/config/cameras/cam-1", json={"no_such_setting": 1}, headers=AUTH)
    assert r.status_code == 422 and "no_such_setting" in r.text
    r = client.put("/api/v1/config/cameras/fleet", json={}, headers=AUTH)
    assert r.status_code == 422 and "fleet" in r.json()["detail"]
    assert client.put("/api/v1/config/cameras/bad%20id", json={}, headers=AUTH).status_code == 422
