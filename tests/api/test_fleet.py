"""Incidents, the inventory, acknowledgements and silences through the API, on the real app, broker and embedded
engine: changes are published on their compacted topics (and read back), reads come from the store and those
topics, and bad input is refused with a clear 4xx."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from api.tokens import hash_token
from core.contracts import Acknowledgement, CameraInfo, IncidentRecord, decode_record
from store import Store
from store.tables import INCIDENTS
from tests.api.conftest import TOKEN, auth, seed
from tests.api.test_config import wait_until
from tests.store.records import alert, metrics

pytestmark = pytest.mark.integration


async def records_of(settings, topic: str, key: str) -> list:
    """Every record of ``topic`` keyed ``key``, from its start."""
    consumer = AIOKafkaConsumer(settings.topic(topic), bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest")  # fmt: skip
    await consumer.start()
    out = []
    try:
        while batch := await consumer.getmany(timeout_ms=2000):
            out += [r for records in batch.values() for r in records if r.key == key.encode()]
    finally:
        await consumer.stop()
    return out


def incident_row(iid: str, status: str, members: dict[str, str], at: float, **changes) -> tuple:
    fields = dict(
        event_id=f"{iid}:{status}", incident_id=iid, status=status, kind="environment", scope="site:north",
        site="north", type="data_drift", signal="brightness", direction="down",
        cameras=sorted(set(members.values())), members=members, changed_alert_ids=sorted(members), opened_at=at,
        resolved_at=at + 60 if status == "resolved" else None, summary=f"[{status}] {iid}", changed_at=at,
    )  # fmt: skip
    fields.update(changes)
    return INCIDENTS.row(IncidentRecord(**fields))


@pytest.fixture
def fleet(store: Store) -> dict:
    """An environment incident of three cameras of a new site (resolved), a device incident of one of them
    (open), and their alerts; ids of this test alone."""
    site, tag = f"site-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex[:6]
    cams = [f"cam-{tag}-{i}" for i in range(3)]
    at = time.time() - 600
    dark = [alert(c, 0, at + i, signal="brightness") for i, c in enumerate(cams)]
    blur = alert(cams[0], 1, at + 200)
    resolved = [a.model_copy(update={"status": "resolved", "raised_at": at + 300}) for a in dark]
    seed(store, [metrics(c, 0, at) for c in cams], [*dark, blur, *resolved])
    env, dev = f"inc-{tag}e", f"inc-{tag}d"
    members = {a.alert_id: a.camera_id for a in dark}
    same = {"site": site, "scope": f"site:{site}", "opened_at": at + 2}  # every record of an incident carries these
    rows = [
        incident_row(env, "raised", dict(list(members.items())[:2]), at + 2, **same),
        incident_row(env, "joined", members, at + 3, event_id=f"{env}:joined:x", **same),
        incident_row(env, "resolved", members, at + 300, **same),
        incident_row(dev, "raised", {blur.alert_id: cams[0]}, at + 320, site=site, kind="device",
                     scope=f"camera:{cams[0]}", signal="blur"),
    ]  # fmt: skip
    store.insert("incidents", rows, INCIDENTS.columns)
    return {"site": site, "cameras": cams, "environment": env, "device": dev, "dark": dark, "blur": blur}


def test_incidents_list_open_first_and_filter_by_status_site_and_kind(client: httpx.Client, fleet):
    listed = client.get("/api/v1/incidents", params={"site": fleet["site"]}).json()
    assert [(i["incident_id"], i["open"], i["status"]) for i in listed] == [
        (fleet["device"], True, "raised"), (fleet["environment"], False, "resolved")]  # fmt: skip
    env = listed[1]
    assert env["cameras"] == fleet["cameras"] and env["kind"] == "environment" and env["resolved_at"] > env["opened_at"]
    by = lambda **p: [i["incident_id"] for i in client.get("/api/v1/incidents", params=p).json()]  # noqa: E731
    assert by(site=fleet["site"], status="open") == [fleet["device"]]
    assert by(site=fleet["site"], status="resolved") == [fleet["environment"]]
    assert by(site=fleet["site"], kind="device") == [fleet["device"]]
    assert by(site="no-such-site") == []
    r = client.get("/api/v1/incidents", params={"status": "closed"})
    assert r.status_code == 422 and "status" in r.text


def test_one_incident_with_its_member_cameras_their_inventory_and_alerts(client: httpx.Client, fleet, app):
    for c in fleet["cameras"]:  # the inventory the API follows, as a gateway declared it
        app.state.fleet.inventory.apply(f"gateway:{c}", CameraInfo(camera_id=c, source="gateway", site=fleet["site"]))
    d = client.get(f"/api/v1/incidents/{fleet['environment']}").json()
    assert [h["status"] for h in d["history"]] == ["raised", "joined", "resolved"]
    assert d["members"] == {a.alert_id: a.camera_id for a in fleet["dark"]}
    cams = {m["camera_id"]: m for m in d["member_cameras"]}
    assert list(cams) == fleet["cameras"]
    first = cams[fleet["cameras"][0]]
    assert [(a["alert_id"], a["status"]) for a in first["alerts"]] == [
        (fleet["dark"][0].alert_id, "raised"), (fleet["dark"][0].alert_id, "resolved")]  # fmt: skip
    assert first["inventory"]["site"] == fleet["site"]  # the blur of the same camera is another incident's
    r = client.get("/api/v1/incidents/inc-nowhere")
    assert r.status_code == 404 and "unknown incident" in r.json()["detail"]
    assert client.get("/api/v1/incidents/bad%20id").status_code == 422


def test_a_cameras_inventory_is_set_with_a_token_published_and_read_back(client: httpx.Client, api_config):
    settings = api_config[0]
    cam = f"cam-{uuid.uuid4().hex[:8]}"
    body = {"site": "harbour", "tags": {"zone": "dock", "side": "east"}, "notes": "on the crane, 12 m"}
    assert client.put(f"/api/v1/cameras/{cam}/inventory", json=body).status_code == 401
    r = client.put(f"/api/v1/cameras/{cam}/inventory", json=body, headers=auth())
    assert r.status_code == 202, r.text
    assert r.json()["source"] == "operator" and r.json()["tags"] == body["tags"]
    (record,) = asyncio.run(records_of(settings, "cameras", f"operator:{cam}"))
    assert decode_record(CameraInfo, record.value).notes == body["notes"]
    got = client.get(f"/api/v1/cameras/{cam}/inventory").json()
    assert (got["site"], got["tags"], got["notes"], got["gateway_record"]) == ("harbour", body["tags"], body["notes"],
                                                                             None)  # fmt: skip
    assert cam in [c["camera_id"] for c in client.get("/api/v1/inventory", params={"tag": "zone=dock"}).json()]
    assert cam not in [c["camera_id"] for c in client.get("/api/v1/inventory", params={"tag": "zone=yard"}).json()]
    assert [c["camera_id"] for c in client.get("/api/v1/inventory", params={"site": "harbour"}).json()] == [cam]
    assert client.get(f"/api/v1/cameras/cam-{uuid.uuid4().hex[:8]}/inventory").status_code == 404


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"site": "north side"}, "site"),
        ({"site": ""}, "site"),
        ({"tags": {"bad key": "x"}}, "keys are 1-50 letters, digits, - or _"),
        ({"tags": {f"k{i}": "v" for i in range(21)}}, "at most 20 items"),
        ({"tags": {"k": "v" * 101}}, "values at most 100"),
        ({"notes": "x" * 1001}, "notes"),
        ({"gateway": "gw-1"}, "Extra inputs are not permitted"),
        ({"tags": ["zone=dock"]}, "tags"),
    ],
)
def test_a_bad_inventory_is_refused_with_a_clear_message(client: httpx.Client, body, says):
    r = client.put("/api/v1/cameras/cam-x/inventory", json=body, headers=auth())
    assert r.status_code == 422 and says in r.text, r.text


def test_acknowledging_and_silencing_record_who_and_when_on_their_topic(client: httpx.Client, fleet, api_config):
    settings, env, cam = api_config[0], fleet["environment"], fleet["cameras"][1]
    before = time.time()
    r = client.post(f"/api/v1/incidents/{env}/acknowledge", json={"by": "ann", "comment": "on it"}, headers=auth())
    assert r.status_code == 202, r.text
    ack = Acknowledgement(**r.json())
    assert (ack.by, ack.until, ack.comment) == ("ann", None, "on it") and before <= ack.at <= time.time()
    assert ack.via.startswith(f"api token {hash_token(TOKEN)[:8]} from 127.0.0.1") and TOKEN not in ack.via
    (record,) = asyncio.run(records_of(settings, "acknowledgements", f"acknowledge:incident:{env}"))
    assert decode_record(Acknowledgement, record.value) == ack
    listed = {i["incident_id"]: i for i in client.get("/api/v1/incidents", params={"site": fleet["site"]}).json()}
    assert listed[env]["acknowledged"]["by"] == "ann" and listed[env]["silenced"] is None

    r = client.post(f"/api/v1/cameras/{cam}/silence", json={"by": "bo", "for_s": 3600}, headers=auth())
    assert r.status_code == 202 and r.json()["until"] == pytest.approx(r.json()["at"] + 3600)
    assert client.get(f"/api/v1/cameras/{cam}/inventory").json()["silenced"]["by"] == "bo"

    def held(**params) -> set:
        return {(a["action"], a["target_id"]) for a in client.get("/api/v1/acknowledgements", params=params).json()}

    assert {("acknowledge", env), ("silence", cam)} <= held()
    r = client.delete(f"/api/v1/cameras/{cam}/silence", params={"by": "bo"}, headers=auth())
    assert r.status_code == 202 and r.json()["until"] == r.json()["at"]
    assert ("silence", cam) not in held() and ("silence", cam) in held(ended=True)
    r = client.delete(f"/api/v1/cameras/{cam}/silence", params={"by": "bo"}, headers=auth())
    assert r.status_code == 404 and "no silence in force" in r.json()["detail"]
    records = asyncio.run(records_of(settings, "acknowledgements", f"silence:camera:{cam}"))
    assert [decode_record(Acknowledgement, r.value).until is not None for r in records] == [True, True]


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/api/v1/incidents/inc-nowhere/acknowledge", {"by": "ann"}, 404, "unknown incident"),
        ("/api/v1/cameras/cam-nowhere-at-all/silence", {"by": "ann", "for_s": 60}, 404, "unknown camera"),
        ("/api/v1/cameras/{cam}/silence", {"by": "ann"}, 422, "for_s"),
        ("/api/v1/cameras/{cam}/silence", {"by": "ann", "for_s": 0}, 422, "greater than 0"),
        ("/api/v1/cameras/{cam}/silence", {"by": "ann", "for_s": 1e9}, 422, "for_s"),
        ("/api/v1/incidents/{env}/silence", {"for_s": 60}, 422, "by"),
        ("/api/v1/incidents/{env}/acknowledge", {"by": ""}, 422, "by"),
        ("/api/v1/incidents/{env}/acknowledge", {"by": "x" * 101}, 422, "by"),
        ("/api/v1/incidents/{env}/acknowledge", {"by": "ann", "until": 5}, 422, "Extra inputs"),
    ],
)
def test_bad_acknowledgements_are_refused_with_a_clear_message(client: httpx.Client, fleet, path, body, status, says):
    path = path.format(cam=fleet["cameras"][0], env=fleet["environment"])
    assert client.post(path, json=body).status_code == 401
    r = client.post(path, json=body, headers=auth())
    assert r.status_code == status and says in r.text, r.text


def test_the_follower_reads_what_another_process_published(client: httpx.Client, app, api_config):
    """A record on the topic, not through this API (a gateway's, or another API replica's), shows up here."""
    from core.topology import create_topics
    from streams.gateway import declare_cameras

    settings = api_config[0]
    cam = f"cam-{uuid.uuid4().hex[:8]}"
    asyncio.run(create_topics(settings))
    asyncio.run(declare_cameras(settings, [cam], site="quay", tags={"zone": "ramp"}, gateway="gw-9"))
    got = wait_until(lambda: client.get(f"/api/v1/cameras/{cam}/inventory").json().get("gateway_record"))
    assert (got["site"], got["gateway"]) == ("quay", "gw-9")
