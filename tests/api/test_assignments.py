"""Models per fleet, site and camera through the API: validated against the registry, written on the config topic
with the scope's settings, read back with every level applied."""

from __future__ import annotations

import asyncio

import httpx

from core.contracts import CameraConfig, decode_record
from tests.api.conftest import auth
from tests.api.test_config import config_records, wait_until


def test_assignments_are_published_exact_and_layered_fleet_site_camera(client: httpx.Client, api_config, camera):
    settings, _ = api_config
    r = client.put("/api/v1/models/assignments/fleet", json={"challenger": "yolov4-tiny", "share": 0.1},
                   headers=auth())  # fmt: skip
    assert r.status_code == 202, r.text
    assert r.json()["models"]["challenger"] == "yolov4-tiny@1.0.0"  # exact: the version the registry has now
    r = client.put(f"/api/v1/cameras/{camera}/inventory", json={"site": "north-shadow"}, headers=auth())
    assert r.status_code in (200, 202), r.text
    r = client.put("/api/v1/models/assignments/site:north-shadow", json={"champion": "yolov4-tiny@1.0.0",
                   "challenger": "nanodet-m", "share": 0.25}, headers=auth())  # fmt: skip
    assert r.status_code == 202, r.text
    view = wait_until(lambda: (v := client.get(f"/api/v1/models/assignments/{camera}").json())["site"] and v)
    assert view["site"] == "north-shadow" and view["own"] is None
    assert view["effective"] == {"champion": "yolov4-tiny@1.0.0", "challenger": "nanodet-m@1.0.0", "share": 0.25,
                                 "previous": None}  # fmt: skip
    r = client.put(f"/api/v1/models/assignments/{camera}", json={"share": 0}, headers=auth())
    assert r.status_code == 202
    assert client.get(f"/api/v1/models/assignments/{camera}").json()["effective"]["share"] == 0.0

    # the camera's monitor settings and its models live in one record: changing one keeps the other
    r = client.put(f"/api/v1/config/cameras/{camera}", json={"rule_consecutive": 3}, headers=auth())
    assert r.status_code == 202
    records = asyncio.run(config_records(settings, 4))
    last = [decode_record(CameraConfig, r.value) for r in records if r.key == camera.encode()][-1]
    assert last.overrides.rule_consecutive == 3 and last.models.share == 0.0
    assert client.get("/api/v1/models/assignments").json()["fleet"]["challenger"] == "yolov4-tiny@1.0.0"
    assert "north-shadow" in client.get("/api/v1/config").json()["sites"]

    assert client.delete(f"/api/v1/models/assignments/{camera}", headers=auth()).status_code == 202
    assert client.get(f"/api/v1/models/assignments/{camera}").json()["own"] is None
    assert client.delete(f"/api/v1/models/assignments/{camera}", headers=auth()).status_code == 404
    assert client.delete("/api/v1/models/assignments/site:north-shadow", headers=auth()).status_code == 202
    assert client.delete("/api/v1/models/assignments/fleet", headers=auth()).status_code == 202


def test_a_model_the_registry_lacks_or_a_share_outside_0_to_1_is_refused_clearly(client: httpx.Client, camera):
    path = f"/api/v1/models/assignments/{camera}"
    assert client.put(path, json={"champion": "nanodet-m"}).status_code == 401
    r = client.put(path, json={"champion": "no-such-model"}, headers=auth())
    assert r.status_code == 422 and "champion 'no-such-model' is not in the model registry" in r.json()["detail"]
    r = client.put(path, json={"challenger": "nanodet-m@9.9"}, headers=auth())
    assert r.status_code == 422 and "has no version '9.9'" in r.json()["detail"]
    r = client.put(path, json={"challenger": "efficientnet-lite0"}, headers=auth())
    assert r.status_code == 422 and "not a detector" in r.json()["detail"]
    for share in (1.5, -0.1):
        r = client.put(path, json={"challenger": "yolov4-tiny", "share": share}, headers=auth())
        assert r.status_code == 422 and "between 0 and 1" in r.text
    r = client.put(path, json={"champion": "nanodet-m", "lanes": 3}, headers=auth())
    assert r.status_code == 422 and "lanes" in r.text
    assert client.put("/api/v1/models/assignments/site:", json={}, headers=auth()).status_code == 422
    assert client.get(path).json()["own"] is None  # nothing was published
