"""Scenario benchmark: does the worker raise the right alert, soon enough, and stay quiet otherwise?

    ./dev bench scenarios [--quick] [--scenario NAME ...] [--dir load-tests/scenarios]

Every file in ``load-tests/scenarios/`` (YAML or JSON; schema in its README.md) describes cameras, their
source footage (and their site, tags and gateway), events injected at a frame index with a magnitude
(rotation, shift, blur, brightness, light, contrast, resolution, black frames, frozen feed, frame-rate drop,
change of scene), at once or ramping up over some frames, and the incidents across cameras it must make. This
script plays them through the real pipeline: an embedded broker, topics as ``cvops`` creates them, the
cameras' sites, tags and gateways on the ``cameras`` topic as their gateway declares them, one ``cvops
worker`` subprocess and, when a scenario expects incidents, one ``cvops incidents`` subprocess; it reads the
alerts and incidents topics.

**Playing.** All cameras of all scenarios are played together (camera ids are prefixed with the scenario
name), frame after frame in order of capture time. Time is simulated: frame ``seq`` of a camera at ``fps``
is captured at ``start + seq / fps`` (``start`` lies beyond the end of the run: see :func:`play`), and its
record timestamp (the broker's arrival time, which the worker's clock-skew and silence checks use) is 20 ms
later; frames are sent as fast as the broker takes them, and the worker works through them at its own pace.
So the results do not depend on whether this machine keeps up with real time, and a run is reproducible
(seeded sources; the worker's batching is the only variable). The frames topic has one partition, so the
worker sees the cameras' frames in capture order.

**Scoring.** An alert's frame is the highest ``seq`` among its ``evidence_frame_ids`` (``camera:session:seq``):
the frame that raised it. An event's window runs from ``at_frame`` to the end of the event plus
``RECOVERY_FRAMES`` (100: the distribution tests' window of 50 frames plus the 50-frame delay target),
since a window still holding changed frames may raise after the change is over. For each event:

- *detected*: at least one alert raised on its camera within its window;
- *correct type*: one of them has a type listed in the event's ``expect``;
- *delay*: frames from ``at_frame`` to the first alert of an expected type (the first alert of any type when
  none is expected), its median over the detected events being ``median_delay_frames``.

Every other raised alert (on a camera without events, or outside every event window) is a false alarm;
``false_alarms_per_10k`` is their count per 10,000 clean frames (frames sent outside every event window).
Resolves are not counted. Targets: detected/events >= 0.95, correct_type/detected >= 0.9,
median_delay_frames <= 50, false_alarms_per_10k <= 0.2. A ramping event's delay counts from its first frame.

**Incidents** (:func:`score_incidents`), for the scenarios that expect some and are played whole: an expected
incident is found by an incident of its kind with exactly its cameras (and its signal, when given); its
alerts are linked when each member camera's raised alerts of the incident's type, signal (either detector of
an image signal: ``streams.incidents.signal_of``) and a compatible direction are among its members
(``IncidentRecord.members``, over its raise and joins); every other incident on the scenario's cameras is
unexpected. Target: every expected incident found with its alerts linked, none unexpected. ``cvops
incidents`` runs with its default settings; its clock is the alerts' broker time, which is the worker's wall
clock, so its window (``CVOPS_INCIDENT_WINDOW_S``) spans camera time in the ratio the worker
keeps up with the cameras (printed, and ``real_time_factor`` in the JSON line): on a machine slower than real
time the window is shorter in camera time than in a deployment. The run waits until each of the watched
cameras' raised alerts is in an incident and each incident whose members all resolved has its resolve (or the
window plus 10 s after the last alert). The alerts (with their broker times) and the incident records are
left in the run's work folder, ``alerts.jsonl`` and ``incidents.jsonl``.

Prints the worker settings, a table of events, the false alarms, the incidents, the targets, then the
clean corpus (``clean_corpus.py``: the camera monitors alone on 360,000 clean frames, its false alarms
per detector with their 95 % upper bound; the worker's default settings plus ``--set``), then one JSON line,
the clean corpus's figures under ``clean_corpus``, the incidents' under ``incidents``. ``--quick`` plays the
cameras marked ``quick`` (the default), each cut at ``QUICK_FRAMES`` frames, and a slice of the clean corpus;
``--no-clean`` leaves the clean corpus out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

import cv2
import numpy as np
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import itertools

import clean_corpus
from _common import free_port, start_worker

from core.contracts import (
    Alert,
    AlertType,
    CameraConfig,
    FrameHeader,
    IncidentRecord,
    MonitorOverrides,
    decode_record,
    pack_frame,
)
from core.settings import Settings
from core.topology import create_topics
from streams.devbroker import fetch_pacing
from streams.gateway import (
    EVENT_KINDS,
    NEUTRAL,
    Event,
    _ping_pong,
    apply_event,
    declare_cameras,
    default_footage,
    encode,
    frame_kept,
    split_shots,
)
from streams.incidents import KINDS as INCIDENT_KINDS
from streams.incidents import compatible, direction, signal_of
from streams.localbroker import EmbeddedBroker

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
QUICK_FRAMES = 250
JPEG_QUALITY = 75
STILL_POOL = 24  # noisy copies of a still made once and drawn at random, so that frames differ as a live feed's do
TARGETS = {
    "detected_rate": (">=", 0.95),
    "correct_type_rate": (">=", 0.9),
    "median_delay_frames": ("<=", 50),
    "false_alarms_per_10k": ("<=", 0.2),
}
# Worker settings of the run (besides broker, topics and store): printed with the results.
WORKER_SETTINGS = {
    "embedding_model": "",  # no embedding model: scene changes must show in the image signals (see README)
    "monitor_expected_fps": 5.0,  # every scenario camera runs at 5 fps
    "monitor_motion_every": 10,  # the moved-camera check on (the default); hand-held cameras turn it off
    "frames_partitions": 1,  # capture order across cameras, for the simulated clock
    "rule_cooldown_s": 60.0,
    "rule_warmup_frames": 150,  # the range rule's and the upstream check's reference (the default)
    # Shorter distribution references than the defaults (600, 100), so that a camera is ready by frame 150:
    "monitor_ks_reference": 100,  # the distribution tests: reference, then the sliding window
    "monitor_ks_window": 50,
}
# An event's window: the event, then the distribution tests' window (a window still holding changed frames
# may raise after the change is over) plus the 50-frame delay target.
RECOVERY_FRAMES = WORKER_SETTINGS["monitor_ks_window"] + 50

Kind = Literal[
    "rotate", "shift", "blur", "brightness", "light", "contrast", "resolution", "black", "freeze", "fps", "scene"
]
assert set(Kind.__args__) == set(EVENT_KINDS)
IncidentKind = Literal["environment", "upstream", "model", "device"]
assert set(IncidentKind.__args__) == set(INCIDENT_KINDS)
CameraId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", min_length=1, max_length=40)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", min_length=1, max_length=40)]  # a site, gateway, tag
NUMERIC = {"rotate", "shift", "blur", "brightness", "light", "contrast", "resolution", "fps"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CameraSpec(_Strict):
    id: CameraId
    source: str = Field(description="bikes:SHOT (a shot of the bundled street footage, played back and forth) or "
                                    "still:NAME (a skimage.data photo, a fixed camera: sensor noise only)")  # fmt: skip
    fps: float = Field(5.0, gt=0, le=60)
    size: tuple[int, int] | None = Field(None, description="[width, height] px; default: the source's own")
    frames: int = Field(gt=0, le=100_000)
    noise: float = Field(2.0, ge=0, le=50, description="sensor noise of a still: Gaussian sigma, grey levels")
    quick: bool = Field(True, description="played by --quick too")
    monitor: MonitorOverrides | None = Field(None, description="per-camera monitor overrides (config topic)")
    site: Name | None = Field(None, description="its site, as a gateway's --site declares it")
    tags: dict[Name, Name] = Field(default_factory=dict, max_length=20, description="key=value, as --tag")
    gateway: Name | None = Field(None, description="the gateway it publishes through, as --gateway-id")

    @model_validator(mode="after")
    def _source(self) -> CameraSpec:
        check_source(self.source)
        return self


class EventSpec(_Strict):
    camera: CameraId
    at_frame: int = Field(ge=0)
    kind: Kind
    magnitude: float | str | None = None
    duration_frames: int | None = Field(None, gt=0, description="default: to the end of the camera's frames")
    ramp_frames: int | None = Field(None, gt=0, description="the change comes on over this many frames")
    expect: list[AlertType] = Field(min_length=1, description="alert types that count as the right answer")

    @model_validator(mode="after")
    def _magnitude(self) -> EventSpec:
        m = self.magnitude
        if self.ramp_frames is not None:
            if self.kind not in NEUTRAL:
                raise ValueError(f"{self.kind} cannot ramp: only {', '.join(NEUTRAL)} can")
            if self.duration_frames is not None and self.ramp_frames > self.duration_frames:
                raise ValueError(f"a ramp of {self.ramp_frames} frames is longer than the event")
        if self.kind in NUMERIC and (not isinstance(m, int | float) or isinstance(m, bool)):
            raise ValueError(f"{self.kind} needs a numeric magnitude, not {m!r}")
        if self.kind in ("resolution", "light", "contrast", "fps", "blur") and m <= 0:
            raise ValueError(f"{self.kind} needs a positive magnitude, not {m!r}")
        if self.kind == "fps" and m >= 1:
            raise ValueError("fps is a drop: its magnitude is a factor below 1")
        if self.kind == "scene":
            if not isinstance(m, str):
                raise ValueError(f"scene needs a source as magnitude (bikes:SHOT or still:NAME), not {m!r}")
            check_source(m)
        if self.kind in ("black", "freeze") and m is not None:
            raise ValueError(f"{self.kind} takes no magnitude")
        return self


class IncidentSpec(_Strict):
    """An incident across cameras (``streams.incidents``) the run must make: its kind and exactly its cameras."""

    kind: IncidentKind
    cameras: list[CameraId] = Field(min_length=1, description="exactly its member cameras")
    signal: str | None = Field(None, description="the shared signal (e.g. brightness); left out: any")

    @model_validator(mode="after")
    def _size(self) -> IncidentSpec:
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError("an incident's cameras are listed once each")
        if (self.kind == "device") != (len(self.cameras) == 1):
            raise ValueError("a device incident has exactly one camera, and only a device incident has one")
        return self


class Scenario(_Strict):
    name: str = Field(pattern=r"^[a-z0-9-]+$", max_length=30)
    description: str = ""
    seed: int = 0
    cameras: list[CameraSpec] = Field(min_length=1)
    events: list[EventSpec] = Field(default_factory=list)
    incidents: list[IncidentSpec] = Field(
        default_factory=list, description="exactly the incidents the run makes on these cameras (cvops incidents)"
    )

    @model_validator(mode="after")
    def _refs(self) -> Scenario:
        cams = {c.id: c for c in self.cameras}
        if len(cams) != len(self.cameras):
            raise ValueError("camera ids must be unique within a scenario")
        for e in self.events:
            if e.camera not in cams:
                raise ValueError(f"event on unknown camera {e.camera!r}")
            if e.at_frame >= cams[e.camera].frames:
                raise ValueError(f"event at frame {e.at_frame} is past camera {e.camera!r}'s {cams[e.camera].frames}")
        for c in self.cameras:
            mine = sorted((e for e in self.events if e.camera == c.id), key=lambda e: e.at_frame)
            for a, b in itertools.pairwise(mine):
                if a.duration_frames is None or a.at_frame + a.duration_frames + RECOVERY_FRAMES > b.at_frame:
                    raise ValueError(f"events on {c.id!r} at {a.at_frame} and {b.at_frame} overlap (with recovery)")
        for inc in self.incidents:
            check_incident(inc, cams)
        return self


def check_incident(inc: IncidentSpec, cams: dict[str, CameraSpec]) -> None:
    """An expected incident names cameras of the scenario that share the scope its kind groups by."""
    unknown = [c for c in inc.cameras if c not in cams]
    if unknown:
        raise ValueError(f"incident on unknown camera(s) {unknown}")
    members = [cams[c] for c in inc.cameras]
    if inc.kind == "environment":
        shared = set.intersection(*({("site", m.site)} | set(m.tags.items()) for m in members)) - {("site", None)}
        if not shared:
            raise ValueError(f"the cameras of an environment incident share no site or tag: {inc.cameras}")
    if inc.kind == "upstream" and (members[0].gateway is None or len({m.gateway for m in members}) > 1):
        raise ValueError(f"the cameras of an upstream incident are behind one gateway: {inc.cameras}")


def check_source(source: str) -> None:
    kind, _, arg = source.partition(":")
    if kind == "bikes" and arg.isdigit():
        return
    if kind == "still" and arg.isidentifier():
        return
    raise ValueError(f"source {source!r} is not bikes:SHOT or still:NAME")


def load_scenario(path: Path) -> Scenario:
    """A scenario file (YAML or JSON), validated; :class:`ValueError` naming the file and the problem."""
    text = path.read_text()
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"{path.name}: {exc}") from None


def scenario_files(folder: Path = SCENARIO_DIR) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml", ".json"))


# --- sources ----------------------------------------------------------------------------------------------


class Sources:
    """Frames by (source, index), made once: the bikes footage's shots, and stills with a pool of noisy copies."""

    def __init__(self, seed: int):
        self.seed = seed
        self._bikes: list[np.ndarray] | None = None
        self._shots: list[range] = []
        self._stills: dict[tuple[str, tuple[int, int] | None, float], list[np.ndarray]] = {}

    def bikes(self) -> list[np.ndarray]:
        if self._bikes is None:
            cap = cv2.VideoCapture(str(default_footage()))
            frames = []
            while True:
                ok, f = cap.read()
                if not ok:
                    break
                frames.append(f)
            cap.release()
            self._bikes, self._shots = frames, split_shots(frames)
        return self._bikes

    def still(self, name: str, size: tuple[int, int] | None, noise: float) -> list[np.ndarray]:
        key = (name, size, noise)
        if key not in self._stills:
            import skimage.data

            image = getattr(skimage.data, name)()
            if isinstance(image, tuple):  # stereo pairs: the left view
                image = image[0]
            if image.ndim == 2:
                image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
            else:
                image = cv2.cvtColor(image[..., :3], cv2.COLOR_RGB2BGR)
            if size is not None:  # cover, then crop the centre
                w, h = size
                s = max(w / image.shape[1], h / image.shape[0])
                image = cv2.resize(image, (round(image.shape[1] * s), round(image.shape[0] * s)), cv2.INTER_AREA)
                y, x = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
                image = np.ascontiguousarray(image[y : y + h, x : x + w])
            rng = np.random.default_rng([self.seed, zlib.crc32(name.encode())])
            self._stills[key] = [
                np.clip(image + rng.normal(0, noise, image.shape), 0, 255).astype(np.uint8) for _ in range(STILL_POOL)
            ]
        return self._stills[key]

    def indices(self, source: str, rng: np.random.Generator) -> Iterator[int]:
        """The source's frame indices, one per tick."""
        kind, _, arg = source.partition(":")
        if kind == "bikes":
            self.bikes()
            return _ping_pong(self._shots[int(arg) % len(self._shots)], 0)
        return _pool_draws(rng)

    def frame(self, source: str, index: int, cam: CameraSpec) -> np.ndarray:
        kind, _, arg = source.partition(":")
        if kind == "bikes":
            image = self.bikes()[index]
            if cam.size is not None and (image.shape[1], image.shape[0]) != tuple(cam.size):
                image = cv2.resize(image, tuple(cam.size), interpolation=cv2.INTER_AREA)
            return image
        return self.still(arg, cam.size, cam.noise)[index]


def _pool_draws(rng: np.random.Generator) -> Iterator[int]:
    last = -1
    while True:
        i = int(rng.integers(STILL_POOL - 1))
        i = i + 1 if i >= last else i  # never the same copy twice in a row: that would be a frozen feed
        last = i
        yield i


# --- playing ----------------------------------------------------------------------------------------------


def camera_frames(
    scenario: Scenario, cam: CameraSpec, frames: int, sources: Sources, cache: dict
) -> Iterator[tuple[int, bytes, int, int]]:
    """(seq, JPEG, width, height) of one camera's frames as the gateway sends them, events applied."""
    events = [
        Event(cam.id, e.at_frame, e.kind, e.magnitude, e.duration_frames, e.ramp_frames)
        for e in scenario.events
        if e.camera == cam.id
    ]
    rng = np.random.default_rng([scenario.seed, sum(map(ord, cam.id))])
    own = sources.indices(cam.source, rng)
    scenes = {e.magnitude: sources.indices(e.magnitude, rng) for e in events if e.kind == "scene"}
    last = None
    for seq in range(frames):
        index = next(own)
        scene_idx = {s: next(it) for s, it in scenes.items()}  # every source runs on, as time does
        active = [e.at(seq) for e in events if e.active(seq)]  # a ramping event at this frame's magnitude
        if not all(frame_kept(seq, e) for e in active):
            continue
        if last is not None and any(e.kind == "freeze" for e in active):
            yield (seq, *last)
            continue
        source = next((e.magnitude for e in active if e.kind == "scene"), cam.source)
        if source != cam.source:
            index = scene_idx[source]
        changes = tuple((e.kind, e.magnitude) for e in active if e.kind not in ("freeze", "fps", "scene"))
        key = (cam.source if source == cam.source else source, cam.size, cam.noise, index, changes)
        if key not in cache:
            image = sources.frame(source, index, cam)
            for e in active:
                if e.kind not in ("freeze", "fps", "scene"):
                    image = apply_event(image, e)
            cache[key] = (encode(image, JPEG_QUALITY), image.shape[1], image.shape[0])
        last = cache[key]
        yield (seq, *last)


def full_id(scenario: Scenario, camera: str) -> str:
    return f"{scenario.name}.{camera}"


async def publish_config(settings: Settings, scenarios: list[Scenario]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for s in scenarios:
            for c in s.cameras:
                if c.monitor is not None:
                    cid = full_id(s, c.id)
                    record = CameraConfig(scope=cid, overrides=c.monitor, updated_by="bench scenarios")
                    await producer.send_and_wait(
                        settings.topic("config"), record.model_dump_json().encode(), key=cid.encode()
                    )
    finally:
        await producer.stop()


def scoped(scenario: Scenario, name: str) -> str:
    """A site, gateway or tag value of a scenario as the run declares it: prefixed like its cameras' ids, so
    that scenarios played together never share a scope."""
    return f"{scenario.name}.{name}"


def inventory(scenarios: list[Scenario]) -> list[tuple[list[str], str | None, dict[str, str], str | None]]:
    """What the cameras' gateways declare, one (cameras, site, tags, gateway) per group of cameras that share
    them; cameras that declare nothing are left out."""
    groups: dict[tuple, list[str]] = {}
    for s in scenarios:
        for c in s.cameras:
            if c.site is not None or c.tags or c.gateway is not None:
                site = scoped(s, c.site) if c.site is not None else None
                tags = tuple(sorted((k, scoped(s, v)) for k, v in c.tags.items()))
                gateway = scoped(s, c.gateway) if c.gateway is not None else None
                groups.setdefault((site, tags, gateway), []).append(full_id(s, c.id))
    return [(cameras, site, dict(tags), gateway) for (site, tags, gateway), cameras in groups.items()]


async def publish_inventory(settings: Settings, scenarios: list[Scenario]) -> int:
    """The :func:`inventory` on the ``cameras`` topic, as a gateway started with ``--site``, ``--tag`` and
    ``--gateway-id`` declares it (``streams.gateway.declare_cameras``); the records sent."""
    return sum([await declare_cameras(settings, *group) for group in inventory(scenarios)])


async def start_incidents(settings: Settings, log: Path, timeout_s: float = 120.0) -> subprocess.Popen:
    """``cvops incidents``, once it reads the alerts (it starts at their end: alerts before that are not its)."""
    proc = start_worker(settings, log, "incidents")
    deadline = time.monotonic() + timeout_s
    while "correlating alerts" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"cvops incidents did not start; see {log}")
        await asyncio.sleep(0.5)
    return proc


async def play(
    settings: Settings, plan: list[tuple[Scenario, CameraSpec, int]], sources: Sources, ahead_s: float
) -> dict:
    """Send every camera's frames in capture order; the seqs sent per camera.

    The simulated clock starts ``ahead_s`` in the future, longer than the run may last, so that the worker's
    wall clock never passes the frames it works on: its silence check (no frame for 10 s) falls back to the
    wall clock when batches come more than 2 s apart, and a clock behind it would report every camera silent.
    """
    start = time.time() + ahead_s
    session = int(start * 1000)
    cache: dict = {}
    streams = []
    for s, c, n in plan:
        it = camera_frames(s, c, n, sources, cache)
        streams.append((s, c, it))
    heads = []
    for i, (_s, c, it) in enumerate(streams):
        nxt = next(it, None)
        if nxt is not None:
            heads.append((nxt[0] / c.fps, i, nxt))
    sent: dict[str, list[int]] = {full_id(s, c.id): [] for s, c, _ in streams}
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True, linger_ms=5,
        max_request_size=settings.max_message_bytes + 64 * 1024,
    )  # fmt: skip
    await producer.start()
    topic = settings.topic("frames")
    pending = []
    try:
        while heads:
            heads.sort()
            t, i, (seq, data, w, h) = heads.pop(0)
            s, c, it = streams[i]
            cid = full_id(s, c.id)
            captured = start + t
            header = FrameHeader(frame_id=f"{cid}:{session}:{seq}", camera_id=cid, seq=seq, captured_at=captured,
                                 encoding="jpeg", width=w, height=h)  # fmt: skip
            pending.append(
                await producer.send(
                    topic, pack_frame(header, data), key=cid.encode(), timestamp_ms=int((captured + 0.02) * 1000)
                )
            )
            sent[cid].append(seq)
            if len(pending) >= 200:
                await asyncio.gather(*pending)
                pending = []
            nxt = next(it, None)
            if nxt is not None:
                heads.append((nxt[0] / c.fps, i, nxt))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


async def collect(
    settings: Settings, want: list[int], done: asyncio.Event, timeout_s: float, watch: frozenset[str] | None = None
) -> tuple[list[Alert], list[float], int, list[IncidentRecord]]:
    """Raised and resolved alerts and their broker times, until the worker answered ``want[0]`` frames (known
    once ``done`` is set).

    With ``watch`` (the cameras whose incidents are scored), the incident records too, until those cameras'
    incidents are settled (:func:`incidents_settled`), or the incident window plus 10 s after the last alert.
    """
    topics = {settings.topic(t): t for t in ("alerts", "predictions", *(("incidents",) if watch else ()))}
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest", group_id=f"scenarios-{uuid.uuid4().hex[:6]}",
    )  # fmt: skip
    await consumer.start()
    alerts: list[Alert] = []
    arrivals: list[float] = []  # the alerts' broker times (unix s): the incidents processor's clock
    records: list[IncidentRecord] = []
    predictions = 0
    deadline = time.monotonic() + timeout_s
    finished_at = None
    last_alert = time.time()  # the processor's clock: the alert records' broker time, then the wall clock
    try:
        while time.monotonic() < deadline:
            for tp, batch in (await consumer.getmany(timeout_ms=300)).items():
                if topics[tp.topic] == "alerts":
                    alerts += [decode_record(Alert, r.value) for r in batch]
                    arrivals += [r.timestamp / 1000 for r in batch]
                    last_alert = max([last_alert, *arrivals[-len(batch) :]])
                elif topics[tp.topic] == "incidents":
                    records += [decode_record(IncidentRecord, r.value) for r in batch]
                else:
                    predictions += len(batch)
            if done.is_set() and predictions >= want[0] and finished_at is None:
                finished_at = time.monotonic()
            if finished_at is None or time.monotonic() - finished_at <= 3.0:  # late alerts of the last batch
                continue
            if watch is None or incidents_settled(alerts, records, watch):
                break
            if time.time() > last_alert + settings.incident_window_s + 10:
                break
    finally:
        await consumer.stop()
    return alerts, arrivals, predictions, records


def incidents_settled(alerts: list[Alert], records: list[IncidentRecord], cameras: frozenset[str]) -> bool:
    """Whether no more incident records can come of ``alerts`` on ``cameras``: each of their raised alerts is
    a member of an incident, and each incident whose member alerts have all resolved has its resolve."""
    members: dict[str, set[str]] = {}
    resolved = set()
    for r in records:
        if cameras.intersection(r.cameras):
            members.setdefault(r.incident_id, set()).update(r.members)
            if r.status == "resolved":
                resolved.add(r.incident_id)
    linked = set().union(*members.values())
    if any(a.status == "raised" and a.camera_id in cameras and a.alert_id not in linked for a in alerts):
        return False
    gone = {a.alert_id for a in alerts if a.status == "resolved"}
    return all(iid in resolved for iid, m in members.items() if m <= gone)


# --- scoring ----------------------------------------------------------------------------------------------


def alert_seq(a: Alert) -> int | None:
    seqs = [int(f.rsplit(":", 1)[1]) for f in a.evidence_frame_ids if f.rsplit(":", 1)[-1].isdigit()]
    return max(seqs) if seqs else None


def score(
    plan: list[tuple[Scenario, CameraSpec, int]],
    sent: dict[str, list[int]],
    alerts: list[Alert],
    recovery: int = RECOVERY_FRAMES,
) -> dict:
    raised = [a for a in alerts if a.status == "raised"]
    by_cam: dict[str, list[tuple[int, Alert]]] = {}
    for a in raised:
        seq = alert_seq(a)
        by_cam.setdefault(a.camera_id, []).append((seq if seq is not None else -1, a))
    rows, clean_frames, false_alarms, used = [], 0, [], set()
    for s, c, n in plan:
        cid = full_id(s, c.id)
        windows = []
        for e in (e for e in s.events if e.camera == c.id and e.at_frame < n):
            end = n if e.duration_frames is None else min(n, e.at_frame + e.duration_frames + recovery)
            windows.append((e, e.at_frame, end))
        clean_frames += sum(1 for q in sent.get(cid, []) if not any(a <= q < b for _, a, b in windows))
        for e, a0, b0 in windows:
            hits = [(q, al) for q, al in by_cam.get(cid, []) if a0 <= q < b0]
            used.update(id(al) for _, al in hits)
            good = [(q, al) for q, al in hits if al.type in e.expect]
            first = min(good or hits, key=lambda x: x[0]) if hits else None
            rows.append({
                "scenario": s.name, "camera": c.id, "kind": e.kind, "magnitude": e.magnitude, "at_frame": e.at_frame,
                "expect": "/".join(e.expect), "detected": bool(hits), "correct_type": bool(good),
                "delay_frames": first[0] - e.at_frame if first else None,
                "first": f"{first[1].type}:{first[1].signal}" if first else "-",
                "raised": sorted({f"{al.type}:{al.signal}" for _, al in hits}),
            })  # fmt: skip
        for q, al in by_cam.get(cid, []):
            if id(al) not in used:
                false_alarms.append({"camera": cid, "seq": q, "type": al.type, "signal": al.signal})
    known = {full_id(s, c.id) for s, c, _ in plan}
    false_alarms += [
        {"camera": a.camera_id, "seq": alert_seq(a), "type": a.type, "signal": a.signal}
        for a in raised
        if a.camera_id not in known
    ]
    return {"rows": rows, "clean_frames": clean_frames, "false_alarms": false_alarms}


def fold_incidents(records: list[IncidentRecord]) -> dict[str, dict]:
    """Incident id -> the incident its records describe: kind, scope, key, every member alert (raise and joins)
    and its cameras, whether it resolved."""
    out: dict[str, dict] = {}
    for r in records:
        inc = out.setdefault(r.incident_id, {
            "incident_id": r.incident_id, "kind": r.kind, "scope": r.scope, "type": r.type, "signal": r.signal,
            "direction": r.direction, "members": {}, "resolved": False,
        })  # fmt: skip
        inc["members"].update(r.members)
        inc["direction"] = r.direction  # an incident of tests takes the direction of its first range alert
        inc["resolved"] = inc["resolved"] or r.status == "resolved"
    for inc in out.values():
        inc["cameras"] = sorted(set(inc["members"].values()))
    return out


def score_incidents(scenarios: list[Scenario], records: list[IncidentRecord], alerts: list[Alert]) -> dict:
    """The expected incidents of ``scenarios`` against those the processor made on their cameras.

    An expected incident is *found* by an incident of its kind with exactly its cameras (and its signal, when
    given). Its alerts are *linked* when each member camera's raised alerts of the incident's type, signal and a
    compatible direction (as the correlator groups them) are members of it. When none is exactly it,
    ``members``, ``nearest`` and the linked alerts are those of the incident of its kind that shares most of its
    cameras. Every other incident on these cameras is
    *unexpected*.
    """
    incidents = list(fold_incidents(records).values())
    rows, unexpected = [], []
    for s in scenarios:
        ours = [i for i in incidents if any(c.startswith(f"{s.name}.") for c in i["cameras"])]
        for spec in s.incidents:
            want = sorted(full_id(s, c) for c in spec.cameras)
            kind = [i for i in ours if i["kind"] == spec.kind]
            match = next((i for i in kind if i["cameras"] == want and spec.signal in (None, i["signal"])), None)
            nearest = match or max(kind, key=lambda i: len(set(i["cameras"]) & set(want)), default=None)
            if match is not None:
                ours.remove(match)
            row = {
                "scenario": s.name, "kind": spec.kind, "signal": spec.signal or "any", "cameras": len(want),
                "found": match is not None, "scope": nearest["scope"] if nearest else "-",
                "nearest": f"{nearest['type']}:{nearest['signal']} {nearest['direction']}" if nearest else "-",
                "members": len(set(nearest["cameras"]) & set(want)) if nearest else 0, "alerts_linked": 0,
                "member_alerts": 0, "resolved": bool(match and match["resolved"]),
            }  # fmt: skip
            if nearest is not None:  # linked alerts of the nearest incident too, when it is not the one expected
                mine = {a.alert_id for a in alerts if a.status == "raised" and a.camera_id in want
                        and (a.type, signal_of(a.type, a.signal)) == (nearest["type"], nearest["signal"])
                        and compatible(direction(a), nearest["direction"])}  # fmt: skip
                row |= {"member_alerts": len(mine), "alerts_linked": len(mine & nearest["members"].keys())}
            rows.append(row)
        unexpected += [
            {k: i[k] for k in ("kind", "scope", "type", "signal", "direction", "cameras")} | {"scenario": s.name}
            for i in ours
        ]
    found = sum(r["found"] for r in rows)
    linked = all(r["alerts_linked"] == r["member_alerts"] > 0 for r in rows if r["found"])
    summary = {
        "expected": len(rows), "found": found, "unexpected": len(unexpected),
        "alerts_linked": sum(r["alerts_linked"] for r in rows if r["found"]),
        "member_alerts": sum(r["member_alerts"] for r in rows if r["found"]),
        "resolved": sum(r["resolved"] for r in rows), "met": found == len(rows) and not unexpected and linked,
    }  # fmt: skip
    return {"rows": rows, "unexpected": unexpected, "summary": summary}


def summarise(scored: dict) -> dict:
    rows = scored["rows"]
    detected = [r for r in rows if r["detected"]]
    correct = [r for r in detected if r["correct_type"]]
    delays = [r["delay_frames"] for r in detected if r["delay_frames"] is not None]
    clean = scored["clean_frames"]
    out = {
        "events": len(rows),
        "detected": len(detected),
        "correct_type": len(correct),
        "median_delay_frames": statistics.median(delays) if delays else None,
        "false_alarms": len(scored["false_alarms"]),
        "clean_frames": clean,
        "false_alarms_per_10k": round(len(scored["false_alarms"]) * 10_000 / clean, 2) if clean else None,
    }
    out["detected_rate"] = round(out["detected"] / out["events"], 3) if rows else None
    out["correct_type_rate"] = round(out["correct_type"] / out["detected"], 3) if detected else None
    met = {}
    for k, (op, target) in TARGETS.items():
        v = out[k]
        met[k] = v is not None and (v >= target if op == ">=" else v <= target)
    out["targets_met"] = met
    return out


def _terminate(signum, frame):
    raise KeyboardInterrupt


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"cameras marked quick, at most {QUICK_FRAMES} frames each")
    ap.add_argument("--scenario", action="append", default=[], help="only this scenario (name); repeatable")
    ap.add_argument("--dir", type=Path, default=SCENARIO_DIR)
    ap.add_argument("--timeout", type=float, default=1200.0, help="give up waiting for the worker after this, s")
    ap.add_argument("--no-clean", action="store_true", help="leave out the clean corpus (clean_corpus.py)")
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a worker setting (core.settings.Settings field, e.g. monitor_ks_window=100) over the run's own",
    )  # fmt: skip
    return ap.parse_args()


def incident_scenarios(plan: list[tuple[Scenario, CameraSpec, int]]) -> list[Scenario]:
    """The scenarios whose incidents are scored: those that declare some and whose cameras are all played
    whole (``--quick`` cuts them)."""
    out = []
    for s in {id(s): s for s, _, _ in plan}.values():  # in order, once each
        played = {c.id: n for t, c, n in plan if t is s}
        if s.incidents and all(played.get(c.id) == c.frames for c in s.cameras):
            out.append(s)
    return out


def run_pipeline(args, settings: Settings, scenarios, plan, sources, work: Path, t_start: float):
    """The broker's topics, the cameras' configuration and inventory, ``cvops incidents`` (when incidents are
    scored), one ``cvops worker``; every frame played. The frames sent, the alerts, the frames answered, the
    incident records."""
    watch = frozenset(full_id(s, c.id) for s in incident_scenarios(plan) for c in s.cameras) or None
    procs: list[subprocess.Popen] = []

    async def run():
        await create_topics(settings)
        await publish_config(settings, scenarios)
        await publish_inventory(settings, scenarios)
        if watch:
            procs.append(await start_incidents(settings, work / "incidents.log"))
        procs.append(start_worker(settings, work / "worker.log"))
        want = [10**12]
        done = asyncio.Event()
        reader = asyncio.create_task(collect(settings, want, done, args.timeout, watch))
        t_play = time.monotonic()
        sent = await play(settings, plan, sources, ahead_s=args.timeout + 120)
        want[0] = sum(len(v) for v in sent.values())
        done.set()
        print(f"sent {want[0]} frames in {time.monotonic() - t_start:.0f} s; waiting for the worker", file=sys.stderr)
        alerts, arrivals, answered, records = await reader
        camera_s = max((max(sent[full_id(s, c.id)], default=-1) + 1) / c.fps for s, c, _ in plan)
        speed = camera_s / (time.monotonic() - t_play)
        window = ""
        if watch:
            span = settings.incident_window_s * speed
            window = f": an incident window of {settings.incident_window_s:.0f} s spanned {span:.0f} s of camera time"
        print(f"the worker went through {camera_s:.0f} s of camera time in {time.monotonic() - t_play:.0f} s "
              f"({speed:.2f} x real time){window}", file=sys.stderr)  # fmt: skip
        if answered < want[0]:
            print(f"WARNING: the worker answered {answered} of {want[0]} frames; see {work / 'worker.log'}")
        (work / "alerts.jsonl").write_text(  # for a look afterwards, and for replaying them through a correlator
            "".join(json.dumps({"broker_time": t, "alert": a.model_dump(mode="json")}) + "\n"
                    for t, a in zip(arrivals, alerts, strict=True))
        )  # fmt: skip
        (work / "incidents.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in records))
        return sent, alerts, answered, records, round(speed, 3)

    try:
        return asyncio.run(run())
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def print_table(rows: list[dict], cols: tuple[str, ...], extra: dict[str, list[str]] | None = None) -> None:
    table = [[str(r[k]) for k in cols] + [",".join(v[i]) for v in (extra or {}).values()] for i, r in enumerate(rows)]
    header = [*cols, *(extra or {})]
    widths = [max(len(x) for x in col) for col in zip(header, *table, strict=False)]
    for line in [header, *table]:
        print("  ".join(x.ljust(w) for x, w in zip(line, widths, strict=False)))


def print_report(scored: dict, summary: dict, incidents: dict | None) -> None:
    cols = ("scenario", "camera", "kind", "magnitude", "at_frame", "expect", "detected", "correct_type",
            "delay_frames", "first")  # fmt: skip
    print_table(scored["rows"], cols, {"raised": [r["raised"] for r in scored["rows"]]})
    print(f"false alarms ({len(scored['false_alarms'])} in {scored['clean_frames']} clean frames):")
    for fa in scored["false_alarms"]:
        print(f"  {fa['camera']} seq {fa['seq']}: {fa['type']}:{fa['signal']}")
    if incidents is not None:
        print("incidents (cvops incidents, its default settings):")
        cols = ("scenario", "kind", "signal", "cameras", "found", "members", "scope", "nearest", "alerts_linked",
                "member_alerts", "resolved")  # fmt: skip
        print_table(incidents["rows"], cols)
        print(f"unexpected incidents ({len(incidents['unexpected'])}):")
        for u in incidents["unexpected"]:
            print(f"  {u['kind']} on {u['scope']}: {u['type']}:{u['signal']} {u['direction']}, {u['cameras']}")
    for k, (op, target) in TARGETS.items():
        print(f"target {k} {op} {target}: {summary[k]} -> {'met' if summary['targets_met'][k] else 'NOT met'}")
    if incidents is not None:
        met = "met" if incidents["summary"]["met"] else "NOT met"
        print(f"target incidents exactly as expected, their alerts linked: {incidents['summary']} -> {met}")


def main() -> int:
    args = parse_args()
    t_start = time.monotonic()
    scenarios = [load_scenario(p) for p in scenario_files(args.dir)]
    if args.scenario:
        scenarios = [s for s in scenarios if s.name in args.scenario]
    names = [s.name for s in scenarios]
    if len(set(names)) != len(names):
        raise SystemExit(f"scenario names must be unique: {names}")
    plan = [
        (s, c, min(c.frames, QUICK_FRAMES) if args.quick else c.frames)
        for s in scenarios
        for c in s.cameras
        if c.quick or not args.quick
    ]
    sources = Sources(seed=scenarios[0].seed if scenarios else 0)
    worker_settings = dict(WORKER_SETTINGS)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or key not in Settings.model_fields:
            raise SystemExit(f"--set {item!r}: not KEY=VALUE with KEY a field of core.settings.Settings")
        worker_settings[key] = value
    recovery = int(worker_settings["monitor_ks_window"]) + 50

    fetch_pacing.install(20)
    signal.signal(signal.SIGTERM, _terminate)  # so that the broker and the worker are stopped on the way out
    work = Path(tempfile.mkdtemp(prefix="cvops-scenarios-"))
    broker = EmbeddedBroker(work / "broker", port=free_port(), log_path=work / "broker.log").start()
    settings = Settings(
        _env_file=None, kafka_bootstrap=broker.bootstrap, store_dsn=f"chdb://{work / 'store'}",
        topic_prefix=f"sc{uuid.uuid4().hex[:6]}.", **worker_settings,
    )  # fmt: skip
    print("worker settings: " + " ".join(f"CVOPS_{k.upper()}={v!r}" for k, v in worker_settings.items()))
    print(f"cameras: {len(plan)}, frames planned: {sum(n for *_, n in plan)}; work folder {work}", file=sys.stderr)
    try:
        sent, alerts, answered, records, speed = run_pipeline(args, settings, scenarios, plan, sources, work, t_start)
    finally:
        broker.stop()

    scored = score(plan, sent, alerts, recovery)
    summary = summarise(scored)
    incidents = None
    if scored_scenarios := incident_scenarios(plan):
        incidents = score_incidents(scored_scenarios, records, alerts)
        summary["incidents"] = incidents["summary"]
        summary["targets_met"]["incidents"] = incidents["summary"]["met"]
    print_report(scored, summary, incidents)
    if not args.no_clean:
        sets = clean_corpus.parse_sets(args.set)
        print(
            "clean corpus, monitor settings: worker defaults"
            + "".join(f" CVOPS_{k.upper()}={v!r}" for k, v in sets.items())
        )
        clean = clean_corpus.run(
            args.quick, settings=Settings(_env_file=None, **sets), workers=min(2, os.cpu_count() or 1)
        )
        clean_corpus.report(clean)
        summary["clean_corpus"] = clean_corpus.summary(clean)
    summary |= {
        "quick": args.quick,
        "scenarios": names,
        "cameras": len(plan),
        "frames_sent": sum(len(v) for v in sent.values()),
        "frames_answered": answered,
        "real_time_factor": speed,  # camera time per wall-clock time while the worker worked
        "wall_s": round(time.monotonic() - t_start, 1),
        "worker_settings": worker_settings,
        "recovery_frames": recovery,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
