"""Incidents across cameras: one cause shared by many cameras is one incident, not one alert per camera.

Pure logic, no Kafka: :class:`Correlator` reads the per-camera alert records (``core.contracts.Alert``) in
order and says which incidents open, grow and resolve. The stream processor that feeds it and the routes
that tell people are thin wiring around it.

Kinds, decided from the alerts that arrive within ``window_s`` of each other (like Alertmanager's
``group_wait``):

- ``environment``: at least ``min_cameras`` cameras of one scope (a site, or a tag) raise the same signal in
  compatible directions (dusk, rain, glare on a whole site): the two detectors of one image signal are one
  signal (:func:`signal_of`), and a test's ``changed`` goes with ``up`` or ``down`` (:func:`compatible`);
- ``upstream``: the same for ``upstream_drift`` alerts of the cameras behind one gateway (a gateway that
  halved every camera's resolution);
- ``model``: ``prediction_drift`` of the same signal on ``min_cameras`` cameras of one model version, in any
  scope: the model moved, not the cameras;
- ``device``: an alert that no group claimed by the end of its window stands for itself.

A camera that raises the same signal while a group incident of its scope is open joins it. An incident
resolves when all its members have resolved. An inhibited symptom (status ``suppressed``) is never an
incident: it becomes a member of its cause's incident (:meth:`Correlator._link`).

Ids are deterministic (the kind, the scope, the key and the first alert's id), so alerts replayed after a
crash open the same incident again, and a receiver can deduplicate on the incident id and its status.
State is data, kept by key (``incident:<id>``, ``pending:<alert id>``) so that a compacted changelog holds one
small record per key and a batch writes only what it changed (:meth:`Correlator.take_changes`,
:meth:`Correlator.load_items`); :meth:`Correlator.to_dict` gives it whole.

>>> c = Correlator(window_s=60, min_cameras=3, scopes=lambda cam: ["site:north"])
>>> def dark(cam, at):
...     return Alert(alert_id=f"a-{cam}", type="data_drift", camera_id=cam, signal="brightness", value=40,
...                  threshold=80, window=60, raised_at=at, message="darker")
>>> [e.status for e in c.observe(dark("c1", 0.0), now=0.0)] + [e.status for e in c.observe(dark("c2", 5), now=5)]
[]
>>> [(e.status, e.incident.kind, len(e.incident.members)) for e in c.observe(dark("c3", 9), now=9)]
[('raised', 'environment', 3)]
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from core.contracts import Alert
from streams.monitor.policy import INHIBITS, explains

Scopes = Callable[[str], Iterable[str]]  # camera id -> its scopes ("site:north", "tag:zone=dock"), best first
KINDS = ("environment", "upstream", "model", "device")
STATE_VERSION = 1
CHANGED = "changed"  # the direction of a test's p-value: the distribution moved, which way is not said


def _same_signals() -> dict[tuple[str, str], str]:
    """(alert type, signal) -> the signal the correlator groups it by, where it is not its own: the alerts the
    camera's alert policy takes for one cause seen by two detectors, two keys of
    :data:`streams.monitor.policy.INHIBITS` that explain each other (the range rule's ``data_drift:brightness``
    and the distribution test's ``data_drift:brightness_distribution``: whichever raises first is the alert,
    the other its symptom). Such keys are one signal, named by the shortest of them (the range rule's)."""
    out: dict[tuple[str, str], str] = {}
    for a in INHIBITS:
        for b in INHIBITS:
            (kind, signal), (other_kind, other) = a.split(":", 1), b.split(":", 1)
            if kind == other_kind and explains(a, b) and explains(b, a):
                out[(kind, signal)] = min(out.get((kind, signal), signal), other, key=lambda s: (len(s), s))
    return out


SAME_SIGNAL = _same_signals()


def signal_of(alert_type: str, signal: str) -> str:
    """The signal alerts are grouped by: one image signal's two detectors are one signal.

    >>> signal_of("data_drift", "brightness_distribution"), signal_of("data_drift", "brightness")
    ('brightness', 'brightness')
    >>> signal_of("upstream_drift", "resolution"), signal_of("prediction_drift", "class_mix")
    ('resolution', 'class_mix')
    """
    return SAME_SIGNAL.get((alert_type, signal), signal)


def compatible(a: str, b: str) -> bool:
    """Whether alerts of one signal in directions ``a`` and ``b`` can share a cause: the same direction, or
    either ``changed`` (a distribution test moves with a dusk as the range rule's ``down`` does); never ``up``
    with ``down``.

    >>> compatible("down", "changed"), compatible("changed", "up"), compatible("up", "down")
    (True, True, False)
    """
    return a == b or CHANGED in (a, b)


def _joinable(way: str) -> tuple[str, ...]:
    """The directions of an open incident an alert in direction ``way`` may join, its own first."""
    return (way, *(w for w in (CHANGED, "down", "up") if w != way and compatible(w, way)))


def direction(alert: Alert) -> str:
    """``up`` or ``down`` for a statistic that crossed a bound of a range, ``changed`` for a test's p-value
    (the direction of a distribution's move is not in the alert).

    >>> a = dict(alert_id="x", type="data_drift", camera_id="c", window=1, raised_at=0, message="")
    >>> direction(Alert(signal="brightness", value=40, threshold=80, **a))
    'down'
    >>> direction(Alert(signal="brightness_distribution", value=1e-5, threshold=1e-3, **a))
    'changed'
    """
    if alert.signal.endswith("_distribution") or alert.type in ("prediction_drift", "embedding_drift", "outlier"):
        return CHANGED
    return "up" if alert.value > alert.threshold else "down"


@dataclass
class Incident:
    incident_id: str
    kind: str
    scope: str  # "site:north", "gateway:g1", "model:nanodet-m@1", or "camera:<id>" for a device incident
    type: str
    signal: str
    direction: str
    opened_at: float
    members: dict[str, str] = field(default_factory=dict)  # alert id -> camera id
    resolved_members: set[str] = field(default_factory=set)  # alert ids
    resolved_at: float | None = None
    symptoms: set[str] = field(default_factory=set)  # member alert ids that are inhibited symptoms of others

    @property
    def cameras(self) -> list[str]:
        return sorted(set(self.members.values()))

    @property
    def open(self) -> bool:
        return self.resolved_at is None

    def to_dict(self) -> dict:
        return {
            "incident_id": self.incident_id, "kind": self.kind, "scope": self.scope, "type": self.type,
            "signal": self.signal, "direction": self.direction, "opened_at": self.opened_at,
            "members": dict(self.members), "resolved_members": sorted(self.resolved_members),
            "resolved_at": self.resolved_at, "symptoms": sorted(self.symptoms),
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> Incident:
        return cls(**{**d, "members": dict(d["members"]), "resolved_members": set(d["resolved_members"]),
                      "symptoms": set(d.get("symptoms", ()))})  # fmt: skip


@dataclass(frozen=True)
class IncidentEvent:
    """What changed: ``raised`` (a new incident), ``joined`` (new members), ``resolved`` (all members resolved)."""

    status: str
    incident: Incident
    alert_ids: tuple[str, ...]  # the alerts this event is about

    @property
    def event_id(self) -> str:
        """Stable across replays: the incident, the status and (for ``joined``) the alerts that joined."""
        if self.status == "joined":
            return f"{self.incident.incident_id}:joined:{_digest(*self.alert_ids)}"
        return f"{self.incident.incident_id}:{self.status}"


def _digest(*parts: str) -> str:
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).hexdigest()


@dataclass
class _Pending:
    alert: Alert
    arrived_at: float
    scopes: tuple[str, ...]
    symptoms: dict[str, str] = field(default_factory=dict)  # its symptoms' alert ids -> camera, waiting with it
    way: str = field(init=False)  # direction(alert), once

    def __post_init__(self) -> None:
        self.way = direction(self.alert)


class Correlator:
    """Groups per-camera alerts into incidents.

    ``scopes(camera_id)`` gives a camera's scopes (its site, then its tags; none: the camera groups with
    nothing), ``gateway(camera_id)`` the gateway it publishes through ('' when unknown) and ``population(scope)``
    how many cameras the scope has (0 when unknown); :class:`core.inventory.Inventory` gives all three. A group
    needs ``min_cameras`` cameras and, where the population is known, ``min_share`` of it.
    """

    def __init__(
        self,
        window_s: float = 120.0,
        min_cameras: int = 3,
        min_share: float = 0.0,
        scopes: Scopes = lambda camera_id: (),
        gateway: Callable[[str], str] = lambda camera_id: "",
        population: Callable[[str], int] = lambda scope: 0,
    ):
        if window_s <= 0 or min_cameras < 2 or not 0 <= min_share <= 1:
            raise ValueError("window_s > 0, min_cameras >= 2 and 0 <= min_share <= 1")
        self.window_s = window_s
        self.min_cameras = min_cameras
        self.min_share = min_share
        self.scopes = scopes
        self.gateway = gateway
        self.population = population
        self.pending: dict[str, _Pending] = {}  # alert id -> waiting for a group
        self.incidents: dict[str, Incident] = {}  # open ones, and resolved ones until pruned
        self.by_alert: dict[str, str] = {}  # alert id -> incident id
        # Indexes, so that an alert costs the same with 5 cameras or 5,000: (scope, key) -> ...
        self._waiting: dict[tuple, dict[str, None]] = {}  # ... the pending alerts' ids, in arrival order
        self._grouped: dict[tuple, str] = {}  # ... the open group incident's id
        self._resolved: deque[tuple[float, str]] = deque()  # (resolved at, incident id), oldest first
        self._dirty: set[str] = set()  # state keys changed since the last take_changes()
        self._symptom_waits: dict[str, str] = {}  # symptom's alert id -> its cause's, waiting (pending) with it

    # -- the life of an alert ------------------------------------------------------------------------
    def observe(self, alert: Alert, now: float) -> list[IncidentEvent]:
        """One alert record, in the order of the alerts topic; ``now`` is unix s (the record's time)."""
        events = self.tick(now)
        if alert.status == "suppressed":
            self._link(alert)
            return events
        if alert.status == "resolved":
            return events + self._resolve(alert, now)
        self._unlink(alert.alert_id)
        if alert.alert_id in self.pending or alert.alert_id in self.by_alert:
            return events  # a replayed raise
        scopes, key = self._scopes_of(alert), self._key(alert)
        for scope in scopes:
            for way in _joinable(direction(alert)):
                if (iid := self._grouped.get((scope, *key, way))) is not None:
                    return [*events, self._join(self.incidents[iid], alert)]
        self._wait(_Pending(alert, now, scopes))
        return events + self._group(alert)

    def tick(self, now: float) -> list[IncidentEvent]:
        """Alerts that waited ``window_s`` without a group become device incidents."""
        due = []
        for p in self.pending.values():  # in arrival order
            if now - p.arrived_at < self.window_s:
                break
            due.append(p)
        events = []
        for p in due:
            self._unwait(p)
            events.append(self._open("device", f"camera:{p.alert.camera_id}", [p], p.arrived_at, p.way))
        return events

    def _wait(self, p: _Pending) -> None:
        self.pending[p.alert.alert_id] = p
        self._dirty.add(f"pending:{p.alert.alert_id}")
        for scope in p.scopes:
            self._waiting.setdefault((scope, *self._key(p.alert)), {})[p.alert.alert_id] = None
        self._symptom_waits.update(dict.fromkeys(p.symptoms, p.alert.alert_id))

    def _unwait(self, p: _Pending) -> None:
        del self.pending[p.alert.alert_id]
        self._dirty.add(f"pending:{p.alert.alert_id}")
        for scope in p.scopes:
            group = self._waiting.get(k := (scope, *self._key(p.alert)), {})
            group.pop(p.alert.alert_id, None)
            if not group:
                self._waiting.pop(k, None)
        for sid in p.symptoms:
            self._symptom_waits.pop(sid, None)

    def _join(self, inc: Incident, alert: Alert) -> IncidentEvent:
        """``alert`` joins the open group incident ``inc``. An incident of ``changed`` alerts (distribution tests)
        takes the direction of the first member that has one: up and down never share an incident."""
        way = direction(alert)
        if inc.direction == CHANGED and way != CHANGED:
            self._grouped.pop(self._group_key(inc), None)
            inc.direction = way
            self._grouped[self._group_key(inc)] = inc.incident_id
        inc.members[alert.alert_id] = alert.camera_id
        self._dirty.add(f"incident:{inc.incident_id}")
        self.by_alert[alert.alert_id] = inc.incident_id
        return IncidentEvent("joined", inc, (alert.alert_id,))

    def _link(self, symptom: Alert) -> None:
        """An inhibited symptom (``suppressed``, ``caused_by`` its cause's alert id, on the same camera) is never
        an incident of its own: it becomes a member of its cause's incident, quietly (it adds no camera, and
        nobody is told: the incident's next record lists it), or waits with its cause for one. The incident does
        not wait for its symptoms to resolve. The symptom of a cause the correlator does not hold (not seen, or
        its incident resolved) is left out; so is one that resolves while its cause waits."""
        sid, cause, camera = symptom.alert_id, symptom.caused_by, symptom.camera_id
        if sid in self.pending or sid in self.by_alert or sid in self._symptom_waits:
            return  # known already: a replay
        if (p := self.pending.get(cause)) is not None and p.alert.camera_id == camera:
            p.symptoms[sid] = camera
            self._symptom_waits[sid] = cause
            self._dirty.add(f"pending:{cause}")
            return
        inc = self.incidents.get(self.by_alert.get(cause, ""))
        if inc is not None and inc.open and inc.members.get(cause) == camera:
            inc.members[sid] = camera
            inc.symptoms.add(sid)
            self.by_alert[sid] = inc.incident_id
            self._dirty.add(f"incident:{inc.incident_id}")

    def _unlink(self, sid: str) -> None:
        """A symptom that outlived its cause is raised as an alert of its own, under the same id (see
        :mod:`streams.monitor.policy`): it leaves its cause's incident (open or resolved), or its waiting cause,
        and goes on as any new alert."""
        if self._drop_waiting(sid):
            return
        inc = self.incidents.get(self.by_alert.get(sid, ""))
        if inc is None or sid not in inc.symptoms:
            return
        inc.symptoms.discard(sid)
        inc.resolved_members.discard(sid)
        del inc.members[sid], self.by_alert[sid]
        self._dirty.add(f"incident:{inc.incident_id}")

    def _drop_waiting(self, sid: str) -> bool:
        """Whether ``sid`` was a symptom waiting with its cause (it no longer is)."""
        if (cause := self._symptom_waits.pop(sid, None)) is None:
            return False
        del self.pending[cause].symptoms[sid]
        self._dirty.add(f"pending:{cause}")
        return True

    def _resolve(self, alert: Alert, now: float) -> list[IncidentEvent]:
        if self._drop_waiting(alert.alert_id):
            return []  # a symptom that came and went while its cause waited
        if (p := self.pending.get(alert.alert_id)) is not None:
            # Raised and resolved before its window closed: still an incident someone must hear of.
            self._unwait(p)
            raised = self._open("device", f"camera:{alert.camera_id}", [p], p.arrived_at, p.way)
            return [raised, *self._resolve(alert, now)]
        inc = self.incidents.get(self.by_alert.get(alert.alert_id, ""))
        if inc is None or not inc.open or alert.alert_id in inc.resolved_members:
            return []
        inc.resolved_members.add(alert.alert_id)
        self._dirty.add(f"incident:{inc.incident_id}")
        # It resolves with its causes: its symptoms are their after-effects (their resolves are not waited for).
        if inc.resolved_members >= inc.members.keys() - inc.symptoms:
            inc.resolved_at = now
            if self._grouped.get(k := self._group_key(inc)) == inc.incident_id:
                del self._grouped[k]
            self._resolved.append((now, inc.incident_id))
            return [IncidentEvent("resolved", inc, tuple(sorted(inc.members)))]
        return []

    def _group(self, alert: Alert) -> list[IncidentEvent]:
        key, way = self._key(alert), direction(alert)
        for scope in self._scopes_of(alert):
            waiting = [self.pending[aid] for aid in self._waiting.get((scope, *key), ())]
            # The alerts this one can share a cause with: those of its direction and the tests' (changed); a
            # test's own goes with the larger side, down or up.
            sides = [
                [p for p in waiting if compatible(p.way, w)] for w in ((way,) if way != CHANGED else ("down", "up"))
            ]
            same = max(sides, key=lambda ps: len({p.alert.camera_id for p in ps}))
            cameras = {p.alert.camera_id for p in same}
            known = self.population(scope)
            if len(cameras) < self.min_cameras or (known and len(cameras) / known < self.min_share):
                continue
            for p in same:
                self._unwait(p)
            kind = {"upstream_drift": "upstream", "prediction_drift": "model"}.get(alert.type, "environment")
            first = min(p.arrived_at for p in same)
            ways = {p.way for p in same} - {CHANGED}
            return [self._open(kind, scope, same, first, ways.pop() if ways else CHANGED)]
        return []

    def _open(self, kind: str, scope: str, waited: list[_Pending], opened_at: float, way: str) -> IncidentEvent:
        """An incident of the alerts that ``waited`` (and their symptoms), in direction ``way``."""
        waited = sorted(waited, key=lambda p: (p.alert.raised_at, p.alert.alert_id))
        first = waited[0].alert
        alert_type, signal = self._key(first)
        iid = "inc-" + _digest(kind, scope, alert_type, signal, way, first.alert_id)
        inc = Incident(iid, kind, scope, alert_type, signal, way, opened_at,
                       members={p.alert.alert_id: p.alert.camera_id for p in waited})  # fmt: skip
        for p in waited:
            inc.members |= p.symptoms
            inc.symptoms |= p.symptoms.keys()
        self.incidents[iid] = inc
        self.by_alert.update(dict.fromkeys(inc.members, iid))
        self._dirty.add(f"incident:{iid}")
        if kind != "device":
            self._grouped[self._group_key(inc)] = iid
        return IncidentEvent("raised", inc, tuple(inc.members))

    def _scopes_of(self, alert: Alert) -> tuple[str, ...]:
        if alert.type == "upstream_drift":
            gw = self.gateway(alert.camera_id)
            return (f"gateway:{gw}",) if gw else ()
        if alert.type == "prediction_drift":
            return (f"model:{alert.model_name}@{alert.model_version}",) if alert.model_name else ()
        return tuple(self.scopes(alert.camera_id))

    @staticmethod
    def _key(alert: Alert) -> tuple[str, str]:
        """What alerts that group share, besides compatible directions: the type and the signal."""
        return (alert.type, signal_of(alert.type, alert.signal))

    @staticmethod
    def _group_key(inc: Incident) -> tuple[str, str, str, str]:
        """An open group incident's place in ``_grouped`` (an incident of an earlier version may name a
        detector's signal: it is grouped by the signal too)."""
        return (inc.scope, inc.type, signal_of(inc.type, inc.signal), inc.direction)

    # -- housekeeping and state --------------------------------------------------------------------
    def prune(self, now: float, keep_s: float = 3600.0) -> int:
        """Forget incidents resolved more than ``keep_s`` ago (a late resolve of theirs is then ignored).
        Costs what it forgets: resolved incidents wait in the order they resolved."""
        n = 0
        while self._resolved and now - self._resolved[0][0] > keep_s:
            _, iid = self._resolved.popleft()
            inc = self.incidents.pop(iid, None)
            if inc is not None:
                n += 1
                self._dirty.add(f"incident:{iid}")
                for aid in inc.members:
                    self.by_alert.pop(aid, None)
        return n

    def to_dict(self) -> dict:
        """The whole state, as one JSON-able value (:meth:`load` restores it)."""
        return {
            "version": STATE_VERSION,
            "pending": [self._pending_dict(p) for p in self.pending.values()],
            "incidents": [i.to_dict() for i in self.incidents.values()],
        }

    def load(self, state: dict) -> None:
        """Restore :meth:`to_dict`'s output (this correlator's settings are kept)."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"incident state version {state.get('version')!r}, expected {STATE_VERSION}")
        self._restore(state["pending"], state["incidents"])

    def items(self) -> dict[str, dict]:
        """The whole state by key: ``incident:<id>`` and ``pending:<alert id>``, each a JSON-able value."""
        out = {f"pending:{aid}": {"version": STATE_VERSION, **self._pending_dict(p)} for aid, p in self.pending.items()}
        out |= {f"incident:{iid}": {"version": STATE_VERSION, **i.to_dict()} for iid, i in self.incidents.items()}
        return out

    def take_changes(self) -> dict[str, dict | None]:
        """The value of every key changed since the last call (None: the key is gone), for a compacted changelog
        keyed like :meth:`items`. A batch of alerts changes a few keys, whatever the whole state holds."""
        out: dict[str, dict | None] = {}
        for key in sorted(self._dirty):
            kind, _, name = key.partition(":")
            value = self.pending.get(name) if kind == "pending" else self.incidents.get(name)
            if value is None:
                out[key] = None
            elif isinstance(value, _Pending):
                out[key] = {"version": STATE_VERSION, **self._pending_dict(value)}
            else:
                out[key] = {"version": STATE_VERSION, **value.to_dict()}
        self._dirty.clear()
        return out

    def load_items(self, items: dict[str, dict]) -> None:
        """Restore the state from its keys' latest values (:meth:`items`, or a changelog folded by key);
        ValueError for a value of another version or a key of no known kind."""
        pending, incidents = [], []
        for key, value in items.items():
            if value.get("version") != STATE_VERSION:
                raise ValueError(f"incident state {key!r}: version {value.get('version')!r}, expected {STATE_VERSION}")
            kind = key.partition(":")[0]
            if kind not in ("pending", "incident"):
                raise ValueError(f"incident state key {key!r} is of no known kind")
            (pending if kind == "pending" else incidents).append({k: v for k, v in value.items() if k != "version"})
        self._restore(pending, incidents)

    @staticmethod
    def _pending_dict(p: _Pending) -> dict:
        return {"alert": p.alert.model_dump(mode="json"), "arrived_at": p.arrived_at, "scopes": list(p.scopes),
                "symptoms": dict(p.symptoms)}  # fmt: skip

    def _restore(self, pending: list[dict], incidents: list[dict]) -> None:
        self.incidents = {d["incident_id"]: Incident.from_dict(d) for d in incidents}
        self.by_alert = {aid: i.incident_id for i in self.incidents.values() for aid in i.members}
        self.pending, self._waiting, self._symptom_waits = {}, {}, {}
        # In arrival order. An alert an incident already holds is no longer waiting: a changelog cut between the
        # incident's record and its alerts' tombstones (the next changes write those tombstones).
        stale = set()
        for p in sorted(pending, key=lambda p: float(p["arrived_at"])):
            alert = Alert.model_validate(p["alert"])
            if alert.alert_id in self.by_alert:
                stale.add(f"pending:{alert.alert_id}")
            else:
                self._wait(_Pending(alert, float(p["arrived_at"]), tuple(p["scopes"]), dict(p.get("symptoms", {}))))
        done = sorted((i.resolved_at, i.incident_id) for i in self.incidents.values() if i.resolved_at is not None)
        self._resolved = deque(done)
        groups = [i for i in self.incidents.values() if i.open and i.kind != "device"]
        self._grouped = {self._group_key(i): i.incident_id for i in groups}
        self._dirty = stale
