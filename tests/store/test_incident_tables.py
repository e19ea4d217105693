"""Incidents and the camera inventory in the store: the writer's rows from the ``incidents`` and ``cameras``
topics, a replay folded into one row, the latest state of an incident by argMax, and its member alerts found
from its ``members`` map."""

from __future__ import annotations

import asyncio

from core.contracts import CameraInfo, DeadLetter, IncidentRecord, decode_record, encode_record
from store import Store
from store.writer import StoreWriter
from tests.store.records import LIMITS, SETTINGS, T0, alert, records_of


def incident(status: str, members: dict[str, str], at: float, resolved: bool = False, **changes) -> IncidentRecord:
    fields = dict(
        event_id=f"inc-1:{status}" if status != "joined" else f"inc-1:joined:{len(members)}", incident_id="inc-1",
        status=status, kind="environment", scope="site:north", site="north", type="data_drift", signal="brightness",
        direction="down", cameras=sorted(set(members.values())), members=members,
        changed_alert_ids=sorted(members), opened_at=T0, resolved_at=at if resolved else None,
        summary=f"[{status}] environment incident on site:north", changed_at=at,
    )  # fmt: skip
    fields.update(changes)
    return IncidentRecord(**fields)


def stored(store: Store, topic: str, items, start: int = 0) -> list[DeadLetter]:
    w = StoreWriter(SETTINGS, store, LIMITS)
    records = records_of(topic, items, partitions=1, start=start)
    rows, dead = w.to_rows(records, now=T0)
    assert asyncio.run(w.insert(rows, asyncio.Event(), w.tokens(records, dead)))
    return dead


LATEST = """
SELECT incident_id, argMax(status, (changed_at, status = 'resolved')) AS status,
       argMax(cameras, changed_at) AS cameras, max(resolved_at) AS resolved_at
FROM incidents FINAL GROUP BY incident_id"""


def test_each_change_of_an_incident_is_a_row_and_its_latest_state_is_one_query(store):
    three = {f"n{i}:brightness": f"n{i}" for i in range(3)}
    four = three | {"n3:brightness": "n3"}
    changes = [incident("raised", three, T0 + 120), incident("joined", four, T0 + 130),
               incident("resolved", four, T0 + 600, resolved=True)]  # fmt: skip
    assert stored(store, "incidents", changes) == []
    assert stored(store, "incidents", changes[1:], start=10) == []  # replayed after a crash, cut differently
    assert store.query("SELECT count() FROM incidents FINAL") == [(3,)]
    ((iid, status, cameras, resolved_at),) = store.query(LATEST)
    assert (iid, status, cameras) == ("inc-1", "resolved", ["n0", "n1", "n2", "n3"])
    assert resolved_at.timestamp() == T0 + 600
    assert store.query("SELECT site, members['n3:brightness'] FROM incidents FINAL WHERE status = 'joined'") == [
        ("north", "n3")
    ]


def test_an_incidents_member_alerts_are_found_from_its_members(store):
    alerts = [alert(f"n{i}", 0, T0 + i, signal="brightness") for i in range(3)] + [alert("s1", 0, T0)]
    stored(store, "alerts", alerts)
    members = {a.alert_id: a.camera_id for a in alerts[:3]}
    stored(store, "incidents", [incident("raised", members, T0 + 120)])
    linked = store.query(
        "SELECT alert_id, camera_id FROM alerts FINAL WHERE alert_id IN "
        "(SELECT arrayJoin(mapKeys(members)) FROM incidents FINAL WHERE incident_id = 'inc-1') ORDER BY alert_id"
    )
    assert linked == [(a.alert_id, a.camera_id) for a in alerts[:3]]


def test_the_inventory_keeps_the_newest_record_of_each_camera_and_source(store):
    records = [
        CameraInfo(camera_id="c1", source="gateway", site="north", tags={"side": "east"}, gateway="gw-1",
                   updated_at=T0),
        CameraInfo(camera_id="c1", source="operator", tags={"zone": "dock"}, notes="on the mast", updated_at=T0 + 5),
        CameraInfo(camera_id="c1", source="operator", site="south", tags={"zone": "yard"}, updated_at=T0 + 9),
    ]  # fmt: skip
    assert stored(store, "cameras", records) == []
    rows = store.query("SELECT source, site, tags, notes, gateway FROM camera_inventory FINAL ORDER BY source")
    assert rows == [("gateway", "north", {"side": "east"}, "", "gw-1"), ("operator", "south", {"zone": "yard"}, "", "")]
    # what a camera is, the operator's fields over the gateway's, as analysts read it
    effective = store.query(
        "SELECT camera_id, argMax(site, (site != '', source = 'operator')) AS site, "
        "mapUpdate(argMaxIf(tags, updated_at, source = 'gateway'), argMaxIf(tags, updated_at, source = 'operator')) "
        "FROM camera_inventory FINAL GROUP BY camera_id"
    )
    assert effective == [("c1", "south", {"side": "east", "zone": "yard"})]


def test_an_incident_or_camera_record_the_store_cannot_hold_is_a_dead_letter(store):
    far = incident("raised", {"a": "c"}, T0 + 20 * 365 * 86400)  # beyond the tests' limits (ten years)
    unnamed = incident("raised", {"a": "c"}, T0, event_id="")
    bad = [far, unnamed, encode_record(CameraInfo(camera_id="c1", source="gateway")).replace(b'"c1"', b'"c 1"')]
    dead = stored(store, "incidents", bad[:2]) + stored(store, "cameras", bad[2:])
    assert [d.reason for d in dead] == ["bad_timestamp", "missing_identity", "bad_record"]
    assert decode_record(IncidentRecord, dead[0].payload()).event_id == "inc-1:raised"
    assert store.query("SELECT count() FROM incidents") == [(0,)]
