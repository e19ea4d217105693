"""Models per fleet, site and camera through the API: validated against the registry, written on the config topic
with the scope's settings, read back with every level applied. (After test_config.py, which reads the config
topic's first records: this file leaves tombstones there.)"""

from __future__ import annotations

import asyncio
import time

import httpx

from core.contracts import ModelChange, decode_record
from tests.api.conftest import TOKEN, auth
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
    last = asyncio.run(config_records(settings, {camera}))[camera]
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


async def topic_records(settings, name: str, n: int) -> list:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(settings.topic(name), bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest")  # fmt: skip
    await consumer.start()
    out: list = []
    try:
        deadline = time.monotonic() + 30
        while len(out) < n and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                out += batch
    finally:
        await consumer.stop()
    return out


def test_promote_and_roll_back_switch_the_champion_and_are_recorded(client: httpx.Client, api_config, camera):
    settings, _ = api_config
    base = f"/api/v1/models/assignments/{camera}"
    who = {"by": "ana", "comment": "yolo agrees on cars"}
    assert client.post(f"{base}/promote", json=who).status_code == 401
    r = client.post(f"{base}/promote", json=who, headers=auth())
    assert r.status_code == 409 and "no challenger to promote" in r.json()["detail"]
    r = client.post(f"{base}/rollback", json=who, headers=auth())
    assert r.status_code == 409 and "nothing to roll back to" in r.json()["detail"]
    assert client.post(f"{base}/promote", json={}, headers=auth()).status_code == 422  # who is required

    r = client.put(base, json={"champion": "nanodet-m", "challenger": "yolov4-tiny", "share": 0.2}, headers=auth())
    assert r.status_code == 202
    promoted = client.post(f"{base}/promote", json=who, headers=auth())
    assert promoted.status_code == 202, promoted.text
    change = promoted.json()
    assert (change["action"], change["from_model"], change["from_version"], change["to_model"],
            change["to_version"]) == ("promote", "nanodet-m", "1.0.0", "yolov4-tiny", "1.0.0")  # fmt: skip
    assert change["by"] == "ana" and change["via"].startswith("api token ") and TOKEN not in change["via"]
    assert change["challenger"] == "nanodet-m@1.0.0" and change["share"] == 0.2
    view = client.get(base).json()["effective"]
    assert (view["champion"], view["challenger"], view["share"]) == ("yolov4-tiny@1.0.0", "nanodet-m@1.0.0", 0.2)

    back = client.post(f"{base}/rollback", json={"by": "ben"}, headers=auth()).json()
    assert (back["action"], back["from_model"], back["to_model"]) == ("rollback", "yolov4-tiny", "nanodet-m")
    assert client.get(base).json()["effective"]["champion"] == "nanodet-m@1.0.0"
    assert client.post(f"{base}/rollback", json={"by": "ben"}, headers=auth()).status_code == 409

    records = [decode_record(ModelChange, r.value) for r in asyncio.run(topic_records(settings, "model-changes", 3))]
    mine = [(c.action, c.from_model, c.to_model, c.by) for c in records if c.scope == camera]
    assert mine == [("promote", "nanodet-m", "yolov4-tiny", "ana"), ("rollback", "yolov4-tiny", "nanodet-m", "ben")]


def test_the_changes_are_read_back_from_the_store_newest_first(client: httpx.Client, store, camera, now):
    from store.tables import MODEL_CHANGES

    changes = [
        ModelChange(change_id=f"c{i}", scope=camera, action=action, from_model=a, from_version="1.0.0", to_model=b,
                    to_version="1.0.0", by="ana", via="api token 12345678 from 127.0.0.1", at=now - 60 + i)
        for i, (action, a, b) in enumerate([("promote", "nanodet-m", "yolov4-tiny"),
                                            ("rollback", "yolov4-tiny", "nanodet-m")])
    ]  # fmt: skip
    store.insert("model_changes", [MODEL_CHANGES.row(c) for c in changes], MODEL_CHANGES.columns)
    got = client.get("/api/v1/models/changes", params={"scope": camera}).json()
    want = [("c1", "rollback", now - 59), ("c0", "promote", now - 60)]
    assert [(c["change_id"], c["action"], c["at"]) for c in got] == want


def test_agreement_over_time_sums_the_frames_counts_as_models_agreement_does(client: httpx.Client, store, camera, now):
    from models.agreement import Agreement
    from store.tables import SHADOW_PREDICTIONS
    from tests.store.records import shadow_prediction

    t0 = now - 600 - now % 300  # the start of a 5-minute interval
    rows = [shadow_prediction(camera, seq=i, at=t0 + 10 * i) for i in range(3)]
    rows.append(shadow_prediction(camera, seq=3, at=t0 + 300, agreement=[]))  # a frame where neither found anything
    store.insert("shadow_predictions", [SHADOW_PREDICTIONS.row(r) for r in rows], SHADOW_PREDICTIONS.columns)
    r = client.get(f"/api/v1/cameras/{camera}/agreement", params={"since": t0, "until": t0 + 600, "step": 300})
    assert r.status_code == 200, r.text
    body = r.json()
    [total] = body["totals"]
    assert (total["champion"], total["challenger"], total["frames"]) == ("nanodet-m@1", "yolov4-tiny@1.0.0", 4)
    want = Agreement(3, 6, 3, 0.3)  # per frame: one person matched, one car the champion lacks
    got = total["all"]
    assert (got["champion_boxes"], got["challenger_boxes"], got["matched"]) == (3, 6, 3)
    assert got["precision"] == want.precision and got["recall"] == want.recall and got["f1"] == want.f1
    assert got["count_delta"] == 3 / 4 and abs(got["score_delta"] - 0.1) < 1e-9
    assert abs(got["confidence_delta"] - ((0.6 + 0.4) / 2 - 0.5)) < 1e-9
    assert total["classes"]["car"]["precision"] == 0.0 and total["classes"]["person"]["f1"] == 1.0
    assert total["classes"]["car"]["confidence_delta"] is None  # the champion saw no car
    assert [(p["start"], p["frames"]) for p in body["points"]] == [(t0, 3), (t0 + 300, 1)]
    assert body["points"][1]["all"]["f1"] == 1.0  # nothing found by either: nothing to disagree on


def test_a_champion_set_by_hand_can_be_rolled_back_too(client: httpx.Client, camera):
    base = f"/api/v1/models/assignments/{camera}"
    r = client.put(base, json={"champion": "yolov4-tiny", "by": "ana"}, headers=auth())
    assert r.status_code == 202 and r.json()["models"]["previous"] == "nanodet-m@1.0.0"  # the workers' CVOPS_MODEL
    r = client.put(base, json={"champion": "yolov4-tiny@1.0.0", "share": 0.5}, headers=auth())
    assert r.json()["models"]["previous"] == "nanodet-m@1.0.0"  # the same champion: kept
    back = client.post(f"{base}/rollback", json={"by": "ana"}, headers=auth()).json()
    assert (back["from_model"], back["to_model"]) == ("yolov4-tiny", "nanodet-m")
    assert client.get(base).json()["effective"]["champion"] == "nanodet-m@1.0.0"
