"""The incident correlator: pure logic, no Kafka."""

from __future__ import annotations

import json
import random

import pytest

from core.contracts import Alert
from streams.incidents import SAME_SIGNAL, Correlator, direction, signal_of

SITES = {f"n{i}": "site:north" for i in range(10)} | {"s1": "site:south", "s2": "site:south"}
GATEWAYS = {f"n{i}": "gw-a" for i in range(10)}


def alert(cam: str, signal: str = "brightness", at: float = 0.0, status: str = "raised", value: float = 40.0,
          type_: str = "data_drift", aid: str | None = None, **kw) -> Alert:  # fmt: skip
    return Alert(alert_id=aid or f"{cam}:{signal}", type=type_, status=status, camera_id=cam, signal=signal,
                 value=value, threshold=80.0, window=60, raised_at=at, message="m", **kw)  # fmt: skip


def correlator(**kw) -> Correlator:
    return Correlator(window_s=60, min_cameras=3, scopes=lambda c: [SITES[c]] if c in SITES else [],
                      gateway=lambda c: GATEWAYS.get(c, ""), **kw)  # fmt: skip


def run(c: Correlator, alerts: list[tuple[float, Alert]]) -> list[tuple[str, str, tuple[str, ...]]]:
    out = []
    for now, a in alerts:
        out += [(e.status, e.incident.kind, tuple(e.incident.cameras)) for e in c.observe(a, now)]
    return out


def test_a_site_that_darkens_together_is_one_environment_incident_and_a_lone_blur_is_a_device_one():
    c = correlator()
    feed = [(t, alert(f"n{t // 10}", at=t)) for t in range(0, 80, 10)]  # 8 cameras, 10 s apart
    feed.insert(3, (25.0, alert("n9", "blur", at=25.0, value=10.0)))
    events = run(c, feed) + [(e.status, e.incident.kind, tuple(e.incident.cameras)) for e in c.tick(200.0)]
    raised = [e for e in events if e[0] == "raised"]
    assert raised == [("raised", "environment", ("n0", "n1", "n2")), ("raised", "device", ("n9",))]
    joined = [e for e in events if e[0] == "joined"]
    assert len(joined) == 5 and joined[-1][2] == tuple(f"n{i}" for i in range(8))


def test_opposite_directions_and_other_sites_do_not_group():
    c = correlator()
    events = run(c, [(0, alert("n0", value=40)), (1, alert("n1", value=120)), (2, alert("s1", value=40))])
    assert events == []
    late = [(e.status, e.incident.kind, tuple(e.incident.cameras)) for e in c.tick(62)]
    assert late == [("raised", "device", ("n0",)), ("raised", "device", ("n1",)), ("raised", "device", ("s1",))]


def test_one_image_signals_two_detectors_are_one_signal_as_the_monitor_declares_them():
    from streams.monitor.policy import INHIBITS
    from streams.monitor.windows import DISTRIBUTION_SIGNALS

    # The range rule and the distribution test of each tested image signal, and nothing else.
    pairs = {("data_drift", key): s for s in DISTRIBUTION_SIGNALS for key in (s, f"{s}_distribution")}
    assert pairs == SAME_SIGNAL
    assert all(f"data_drift:{s}" in INHIBITS for s in DISTRIBUTION_SIGNALS)  # the range rule watches them too
    assert signal_of("prediction_drift", "brightness_distribution") == "brightness_distribution"  # another type


def test_a_dusk_seen_by_the_distribution_test_on_some_cameras_and_the_range_rule_on_others_is_one_incident():
    """Which detector of a signal raises first depends on the view: a fixed view's distribution test
    (``changed``), a busy street's range rule (``down``). One dusk all the same."""
    c = correlator()
    feed = [(t, alert(f"n{t}", "brightness_distribution", at=t, value=1e-9)) for t in range(2)]
    feed += [(t, alert(f"n{t}", "brightness", at=t, value=30.0)) for t in range(2, 5)]
    feed += [(9, alert("n9", "brightness", at=9, value=200.0))]  # brighter: another cause
    assert run(c, feed) == [
        ("raised", "environment", ("n0", "n1", "n2")), ("joined", "environment", ("n0", "n1", "n2", "n3")),
        ("joined", "environment", ("n0", "n1", "n2", "n3", "n4")),
    ]  # fmt: skip
    (lamp,) = c.tick(200)
    site = next(i for i in c.incidents.values() if i.kind == "environment")
    assert (site.type, site.signal, site.direction) == ("data_drift", "brightness", "down")
    assert (lamp.incident.kind, lamp.incident.signal, lamp.incident.direction) == ("device", "brightness", "up")


def test_an_incident_of_tests_takes_the_direction_of_its_first_range_alert_and_never_both():
    c = correlator()
    tests = [(t, alert(f"n{t}", "brightness_distribution", at=t, value=1e-9)) for t in range(3)]
    assert [(e.status, e.incident.direction) for now, a in tests for e in c.observe(a, now)] == [
        ("raised", "changed")]  # fmt: skip
    assert [e.incident.direction for e in c.observe(alert("n3", value=30.0), 3)] == ["down"]
    assert c.observe(alert("n4", value=200.0), 4) == []  # up: not this incident; it waits for its own
    assert [(e.incident.kind, e.incident.direction) for e in c.tick(100)] == [("device", "up")]
    # up and down on one site are no group of three, even with a test between them
    c = correlator()
    mixed = [(0, alert("n0", value=200.0)), (1, alert("n1", value=30.0)),
             (2, alert("n2", "brightness_distribution", value=1e-9))]  # fmt: skip
    assert run(c, mixed) == [] and len(c.tick(100)) == 3


def test_a_symptom_is_a_member_of_its_causes_incident_never_an_incident_of_its_own():
    c = correlator()
    run(c, [(t, alert(f"n{t}", at=t)) for t in range(3)])  # a site incident of n0-n2
    symptom = alert("n1", "brightness_distribution", status="suppressed", caused_by="n1:brightness", value=1e-9)
    assert c.observe(symptom, 5) == []  # quietly: no camera is added, nobody is told
    (site,) = c.incidents.values()
    assert site.members["n1:brightness_distribution"] == "n1" and site.cameras == ["n0", "n1", "n2"]
    # the next record lists it; the incident resolves with its causes, its symptom's resolve not waited for
    (joined,) = c.observe(alert("n3"), 6)
    assert "n1:brightness_distribution" in joined.incident.members
    resolves = [(7 + i, alert(f"n{i}", status="resolved")) for i in range(4)]
    assert run(c, resolves) == [("resolved", "environment", ("n0", "n1", "n2", "n3"))]
    assert run(c, [(20, symptom.model_copy(update={"status": "resolved"}))]) == []
    # a symptom of a cause it does not hold (unknown, resolved) is left out: never a device incident
    orphans = [symptom.model_copy(update={"alert_id": f"s{i}", "caused_by": cause})
               for i, cause in enumerate(("nowhere", "n0:brightness"))]  # fmt: skip
    assert run(c, [(30, a) for a in orphans]) == [] and c.tick(1000) == [] and c.pending == {}


def test_a_symptom_waits_with_its_cause_and_leaves_its_incident_once_it_outlives_it():
    c = correlator()
    symptom = alert("s1", "contrast_distribution", status="suppressed", caused_by="s1:blur", value=1e-9)
    run(c, [(0, alert("s1", "blur", value=5.0)), (1, symptom)])
    restored = correlator()
    restored.load(json.loads(json.dumps(c.to_dict())))  # the symptom waits with its cause in the state
    for corr in (c, restored):
        (lens,) = corr.tick(61)
        assert lens.incident.kind == "device" and lens.incident.symptoms == {"s1:contrast_distribution"}
        assert run(corr, [(70, alert("s1", "blur", status="resolved", value=5.0))]) == [("resolved", "device", ("s1",))]
        # the symptom outlived its cause: raised as an alert of its own, under the same id, it leaves the incident
        own = symptom.model_copy(update={"status": "raised", "caused_by": ""})
        assert run(corr, [(80, own)]) == [] and set(corr.pending) == {own.alert_id}
        assert "s1:contrast_distribution" not in lens.incident.members
        assert [(e.incident.signal, e.incident.direction) for e in corr.tick(200)] == [("contrast", "changed")]
    # a symptom that comes and goes while its cause waits is left out
    c = correlator()
    run(c, [(0, alert("s1", "blur", value=5.0)), (1, symptom), (2, symptom.model_copy(update={"status": "resolved"}))])
    ((_, kind, _),) = run(c, [(61, alert("s2"))])
    assert kind == "device" and c.incidents[c.by_alert["s1:blur"]].members == {"s1:blur": "s1"}


def test_min_share_of_a_known_population():
    c = correlator(min_share=0.5, population=lambda scope: 10)
    assert run(c, [(t, alert(f"n{t}", at=t)) for t in range(4)]) == []  # 4 of 10 is under half
    assert run(c, [(4, alert("n4", at=4))]) == [("raised", "environment", ("n0", "n1", "n2", "n3", "n4"))]


def test_gateway_and_model_groups():
    c = correlator()
    up = [(t, alert(f"n{t}", "width", type_="upstream_drift", value=320)) for t in range(3)]
    assert run(c, up) == [("raised", "upstream", ("n0", "n1", "n2"))]
    pred = [(t, alert(cam, "class_mix", type_="prediction_drift", model_name="nanodet-m", model_version="2"))
            for t, cam in enumerate(["n5", "s1", "x9"])]  # fmt: skip
    assert run(c, pred) == [("raised", "model", ("n5", "s1", "x9"))]


def test_resolves_when_every_member_has_and_ids_are_stable_across_replays():
    feed = [(t, alert(f"n{t}", at=t)) for t in range(3)] + [(t, alert(f"n{t - 10}", status="resolved"))
                                                              for t in range(10, 13)]  # fmt: skip
    first, second = correlator(), correlator()
    ids = [[e.event_id for now, a in feed for e in c.observe(a, now)] for c in (first, second)]
    assert ids[0] == ids[1] and [i.rsplit(":", 1)[1] for i in ids[0]] == ["raised", "resolved"]
    # a replayed raise or resolve changes nothing
    assert run(first, feed) == []


def test_a_flap_inside_the_window_is_still_told_and_symptoms_never_are():
    c = correlator()
    events = run(c, [(0, alert("n0")), (5, alert("n0", status="resolved")),
                     (6, alert("n1", status="suppressed", caused_by="x"))])  # fmt: skip
    assert events == [("raised", "device", ("n0",)), ("resolved", "device", ("n0",))]
    assert c.pending == {}


def test_state_round_trips_through_json():
    c = correlator()
    run(c, [(0, alert("n0")), (1, alert("n1")), (2, alert("n2")), (3, alert("s1"))])
    restored = correlator()
    restored.load(json.loads(json.dumps(c.to_dict())))
    tail = [(4, alert("n3")), (5, alert("n0", status="resolved")), (70, alert("s2"))]
    assert run(restored, tail) == run(c, tail)
    with pytest.raises(ValueError, match="version"):
        restored.load({"version": 99})


def test_direction():
    assert direction(alert("n0", value=10)) == "down" and direction(alert("n0", value=100)) == "up"
    assert direction(alert("n0", "blur_distribution", value=1e-6)) == "changed"


def test_resolved_incidents_are_forgotten_after_a_while_and_open_ones_never():
    c = correlator()
    run(c, [(0, alert("n0")), (1, alert("n1")), (2, alert("n2")), (3, alert("s1"))])
    run(c, [(t, alert(f"n{t - 10}", status="resolved")) for t in range(10, 13)])
    assert c.prune(now=12 + 3599) == 0
    assert c.prune(now=12 + 3601) == 1 and c.tick(now=12 + 3601)  # s1 became a device incident, still open
    assert [i.kind for i in c.incidents.values()] == ["device"] and set(c.by_alert) == {"s1:brightness"}


def fleet_feed(cameras: int = 5000, site_size: int = 50, seed: int = 5) -> list[tuple[float, Alert]]:
    """Every camera raises one alert in the first minute, on a signal of its own choosing (no coincidence
    groups), and the 50 cameras of site 0 darken together (one environment incident)."""
    rng = random.Random(seed)
    signals = ("blur", "contrast", "saturation", "frame_diff", "aspect_ratio", "bytes")
    feed = []
    for c in range(cameras):
        signal = "brightness" if c < site_size else rng.choice(signals)
        value = 20.0 if c < site_size else rng.choice((20.0, 200.0))
        at = rng.uniform(0, 60)
        feed.append((at, alert(f"cam{c}", signal, at=at, value=value, aid=f"cam{c}:{signal}")))
    return sorted(feed, key=lambda f: f[0])


def fleet_correlator() -> Correlator:
    return Correlator(window_s=120, min_cameras=3, min_share=0.5, scopes=lambda cam: [f"site:{int(cam[3:]) // 50}"],
                      population=lambda scope: 50)  # fmt: skip


def test_the_state_of_5000_cameras_is_kept_by_key_each_record_far_under_the_topics_message_size():
    from core.settings import Settings
    from core.topology import spec

    most = spec(Settings(_env_file=None), "incidents-state").max_message_bytes
    c, feed = fleet_correlator(), fleet_feed()
    run(c, feed)
    c.tick(200.0)  # every lone alert is a device incident by now
    changes = c.take_changes()
    sizes = {key: len(json.dumps(value)) for key, value in changes.items() if value is not None}
    assert sum(k.startswith("incident:") for k in sizes) == 5000 - 50 + 1
    assert max(sizes.values()) < most / 50  # the biggest, the site's 50 cameras: about 5 KB
    assert len(json.dumps(c.to_dict())) > most  # whole, one record would not fit
    # a batch writes what it changed: a resolve changes its incident alone
    c.observe(feed[0][1].model_copy(update={"status": "resolved"}), now=300.0)
    assert len(c.take_changes()) == 1


def test_a_state_restored_from_its_keys_goes_on_as_the_original_would():
    feed = fleet_feed()
    original = fleet_correlator()
    run(original, feed[:3000])  # part of the fleet waits still, part is grouped
    folded: dict[str, dict] = {}
    for key, value in original.take_changes().items():
        if value is None:
            folded.pop(key, None)
        else:
            folded[key] = json.loads(json.dumps(value))
    restored = fleet_correlator()
    restored.load_items(folded)
    assert restored.to_dict() == original.to_dict()
    tail = feed[3000:] + [(500.0 + i, a.model_copy(update={"status": "resolved"})) for i, (_, a) in enumerate(feed)]
    assert run(restored, tail) == run(original, tail)
    with pytest.raises(ValueError, match="version"):
        restored.load_items({"incident:x": {"version": 99}})


def test_a_changelog_cut_between_an_incident_and_its_alerts_tombstones_is_completed_on_restore():
    c = correlator()
    run(c, [(0, alert("n0")), (1, alert("n1"))])
    items = {k: json.loads(json.dumps(v)) for k, v in c.take_changes().items()}
    run(c, [(2, alert("n2"))])  # groups the three: the incident's key, then three tombstones
    changes = c.take_changes()
    (incident,) = [k for k in changes if k.startswith("incident:")]
    items[incident] = json.loads(json.dumps(changes[incident]))  # the crash came before the tombstones
    restored = correlator()
    restored.load_items(items)
    assert restored.pending == {} and set(restored.by_alert) == {"n0:brightness", "n1:brightness", "n2:brightness"}
    assert restored.take_changes() == {"pending:n0:brightness": None, "pending:n1:brightness": None}
    assert run(restored, [(3, alert("n3"))]) == [("joined", "environment", ("n0", "n1", "n2", "n3"))]


def test_a_state_written_whole_by_an_earlier_version_is_restored_and_rewritten_by_key():
    from core.settings import Settings
    from streams.incident_stream import LEGACY_KEY, OFFSETS_KEY, IncidentProcessor

    before = correlator()
    run(before, [(0, alert("n0")), (1, alert("n1"))])
    whole = json.dumps({"correlator": before.to_dict(), "offsets": {"0": 7, "1": 9}}).encode()
    p = IncidentProcessor(Settings(_env_file=None))
    p.restore({LEGACY_KEY: whole})
    assert p.offsets == {0: 7, 1: 9} and set(p.correlator.pending) == {"n0:brightness", "n1:brightness"}
    assert p._rewrite == {**p.correlator.items(), LEGACY_KEY: None}  # the next batch writes it by key
    again = IncidentProcessor(Settings(_env_file=None))
    keyed = {k: json.dumps(v).encode() for k, v in p.correlator.items().items()}
    again.restore({**keyed, OFFSETS_KEY: b'{"version": 1, "offsets": {"0": 7, "1": 9}}'})
    assert again.correlator.to_dict() == p.correlator.to_dict() and again.offsets == p.offsets
    broken = IncidentProcessor(Settings(_env_file=None))
    broken.restore({**keyed, OFFSETS_KEY: b"not json"})  # unreadable: logged, and it starts afresh
    assert broken.offsets == {} and broken.correlator.to_dict() == correlator().to_dict()
