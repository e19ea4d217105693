"""What a camera's alerts become before they are sent: one alert per cause, and no flapping. Pure.

The detectors of one camera (:class:`streams.monitor.camera.CameraMonitor`) each raise and resolve their own
alerts. :class:`AlertPolicy` sits between them and the alerts topic, and does two things, the way
Alertmanager's inhibition rules and Prometheus's ``keep_firing_for`` do:

- **Inhibition.** While a cause's alert is open on a camera (:data:`INHIBITS`: a device fault, an upstream
  change, a moved camera, one of the two detectors of an image signal), and for ``holdoff_s`` after it
  resolved (the windows still hold its frames), an alert it explains is not raised as an alert of its own:
  it is sent with status ``suppressed`` and ``caused_by`` set to the cause's alert id, and resolved with the
  same id. A symptom still open ``holdoff_s`` after its cause resolved has outlived it: it is raised as an
  alert of its own (same id, ``caused_by`` empty). A raise that a cause building up on this frame would
  explain (a black run shorter than the fault's, a moved check not yet confirmed: ``brewing``) waits until
  that cause is raised (then it is its symptom) or its run breaks (then it is raised).
- **Hold-off.** A statistical alert (:data:`HELD`: the distribution, prediction, embedding, moved-camera and
  concept tests) whose detector clears is not resolved at once: its resolve is held for ``holdoff_s``, and a
  raise of the same signal in that time continues the same alert (nothing is sent). Only a clear that lasts
  the whole hold-off is sent, with the time the detector cleared. Device faults and upstream changes
  resolve at once: their detectors clear on the frame that shows the fault gone.

Keys are ``"<type>:<signal>"``. The clock is the caller's (frames' processing times, the worker's timer):
the policy never reads one.

>>> from core.contracts import Alert
>>> def alert(kind, signal, status="raised", at=0.0):
...     return Alert(alert_id=f"{signal}@{at}", type=kind, status=status, camera_id="c", signal=signal,
...                  value=0.0, threshold=0.0, window=0, raised_at=at, message="")
>>> p = AlertPolicy(holdoff_s=300)
>>> [(a.signal, a.status, a.caused_by) for a in p.apply([alert("data_drift", "brightness"),
...                                                       alert("device_fault", "black")], now=0.0)]
[('black', 'raised', ''), ('brightness', 'suppressed', 'black@0.0')]
>>> [(a.signal, a.status) for a in p.apply([alert("prediction_drift", "class_mix", at=1.0)], now=1.0)]
[('class_mix', 'suppressed')]
"""

from __future__ import annotations

import fnmatch
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from core.contracts import Alert

# What the cause explains on the same camera. Patterns on "type:signal" keys (fnmatch).
_IMAGE = ("data_drift:*", "prediction_drift:*", "upstream_drift:bytes_per_pixel", "outlier:*", "embedding_drift:*")
_VIEW = (*_IMAGE, "domain_drift:camera_moved")
_SIGNALS = ("brightness", "contrast", "blur", "saturation")  # the image signals both data_drift detectors watch
# What a change of one image signal explains besides the other detector of the same signal (see INHIBITS).
_ALSO = {
    "blur": ("data_drift:contrast_distribution",),
    "brightness": ("data_drift:blur_distribution", "prediction_drift:*", "outlier:*", "embedding_drift:*"),
}
_WHY_SIGNAL = {
    "brightness": "one signal, two detectors: a dusk is one brightness alert; near black, sensor noise and JPEG "
    "move sharpness, and in the dark the model finds other things with other scores",
    "blur": "one signal, two detectors; a soft lens also lowers contrast a little",
}


def _one_signal(signal: str, other: str) -> tuple[tuple[str, ...], str]:
    """The rule of one detector of an image signal: the other detector of it, and what else the signal explains."""
    return (other, *_ALSO.get(signal, ())), _WHY_SIGNAL.get(signal, "one signal, two detectors")


# cause -> (what it explains, why). Its order is the order causes are settled in within one frame.
RULES: dict[str, tuple[tuple[str, ...], str]] = {
    # Device faults: the camera or its link is broken, every statistic of the picture follows.
    "device_fault:no_frames": (
        ("device_fault:low_fps", "upstream_drift:frame_rate"),
        "a silence has no picture: what the frames that end it show (a dark or turned view) is a problem of its own",
    ),
    "device_fault:black": (
        (*_VIEW, "device_fault:frozen", "device_fault:over_exposed"),
        "everything in the picture follows; a black feed is also unchanging",
    ),
    "device_fault:over_exposed": ((*_VIEW, "device_fault:frozen"), "everything in the picture follows"),
    "device_fault:frozen": (
        _IMAGE,
        "the image statistics follow; not camera_moved: the picture it repeats may be "
        "a moved view, an alert of its own",
    ),
    "device_fault:low_fps": (("upstream_drift:frame_rate",), "the same thing, seen from the gateway"),
    # Upstream changes: what the new format changes.
    "upstream_drift:aspect_ratio": ((*_VIEW, "upstream_drift:resolution"), "everything in the picture follows"),
    "upstream_drift:resolution": (
        (
            "upstream_drift:bytes_per_pixel",
            "data_drift:blur",
            "data_drift:blur_distribution",
            "data_drift:contrast_distribution",
            "prediction_drift:*",
            "outlier:*",
            "embedding_drift:*",
        ),
        "what a new size changes; not brightness, which it does not",
    ),
    "upstream_drift:encoding": (
        (
            "upstream_drift:bytes_per_pixel",
            "data_drift:blur",
            "data_drift:*_distribution",
            "prediction_drift:confidence",
            "prediction_drift:expected_precision",
            "outlier:*",
            "embedding_drift:*",
        ),
        "what another codec changes",
    ),
    "upstream_drift:bytes_per_pixel": (
        ("data_drift:blur_distribution", "data_drift:contrast_distribution"),
        "compression softens the picture",
    ),
    "domain_drift:camera_moved": (
        ("data_drift:*", "prediction_drift:*", "outlier:*", "embedding_drift:*"),
        "another scene: other statistics, other things found in it",
    ),
    # One image signal, two detectors (the range rule, quick on a step; the distribution test, on a slower
    # move): whichever raises first is the alert, the other its symptom.
    **{f"data_drift:{s}": _one_signal(s, f"data_drift:{s}_distribution") for s in _SIGNALS},
    **{f"data_drift:{s}_distribution": _one_signal(s, f"data_drift:{s}") for s in _SIGNALS},
    "prediction_drift:confidence": (
        ("prediction_drift:expected_precision",),
        "the expected precision is the mean calibrated score: a fall of the scores is its fall",
    ),
}
INHIBITS: dict[str, tuple[str, ...]] = {cause: explained for cause, (explained, _) in RULES.items()}
CAUSES = tuple(INHIBITS)  # in this order within one frame: a cause is settled before what it explains
HELD = frozenset({"data_drift", "prediction_drift", "embedding_drift", "outlier", "domain_drift", "concept_drift"})
DEFAULT_HOLDOFF_S = 300.0


def explains(cause: str, key: str) -> bool:
    """Whether the alert ``cause`` (a "type:signal" key) explains the alert ``key``.

    >>> explains("device_fault:black", "data_drift:blur_distribution")
    True
    >>> explains("domain_drift:camera_moved", "device_fault:black")
    False
    """
    return cause != key and any(fnmatch.fnmatchcase(key, p) for p in INHIBITS.get(cause, ()))


def key_of(a: Alert) -> str:
    return f"{a.type}:{a.signal}"


def _rank(a: Alert) -> int:
    k = key_of(a)
    return CAUSES.index(k) if k in CAUSES else len(CAUSES)


@dataclass
class _Open:
    alert: Alert  # as sent (its id, status raised or suppressed, caused_by)
    held: Alert | None = None  # its resolve, held back since its detector cleared


@dataclass
class AlertPolicy:
    """Inhibition and hold-off for one camera's alerts; see the module's docstring. State: the open alerts,
    the causes that ended less than ``holdoff_s`` ago and the raises waiting for a cause, as a dict of JSON
    values (:meth:`to_dict`)."""

    holdoff_s: float = DEFAULT_HOLDOFF_S
    open: dict[str, _Open] = field(default_factory=dict)  # key -> open alert (own or symptom)
    ended: dict[str, tuple[str, float]] = field(default_factory=dict)  # cause key -> (alert id, resolved at)
    waiting: dict[str, Alert] = field(default_factory=dict)  # key -> raise waiting for a brewing cause

    def apply(self, alerts: Iterable[Alert], now: float, brewing: Iterable[str] = ()) -> list[Alert]:
        """The alerts to send for the detectors' ``alerts`` of one frame (or timer tick) at ``now``, given the
        causes ``brewing`` (keys of causes building up, not raised yet)."""
        brewing = set(brewing)
        out: list[Alert] = []
        for a in sorted(alerts, key=_rank):
            out += self._raise(a, now, brewing) if a.status == "raised" else self._resolve(a, now, brewing)
        for k, a in list(self.waiting.items()):
            if not any(explains(b, k) for b in brewing) or self._cause_of(k, now):
                del self.waiting[k]
                out += self._send(a, now)
        return out + self.tick(now)

    def tick(self, now: float) -> list[Alert]:
        """Held resolves whose hold-off has passed, and symptoms that outlived their cause's hold-off."""
        out: list[Alert] = []
        for k, o in list(self.open.items()):
            if o.held is not None and now - o.held.raised_at >= self.holdoff_s:
                del self.open[k]
                out.append(o.held)
                if k in INHIBITS:
                    self.ended[k] = (o.alert.alert_id, o.held.raised_at)
        for k, (aid, at) in list(self.ended.items()):
            if now - at < self.holdoff_s:
                continue
            del self.ended[k]
            for sk, o in list(self.open.items()):
                if o.alert.caused_by == aid and not self._cause_of(sk, now):
                    own = o.alert.model_copy(
                        update={"status": "raised", "caused_by": "", "raised_at": now,
                                "message": o.alert.message.split(": ", 1)[-1]}
                    )  # fmt: skip
                    self.open[sk] = _Open(own)
                    out.append(own)
        return out

    def _cause_of(self, key: str, now: float) -> str:
        """The alert id of the open (or recently ended) cause that explains ``key``, or ""."""
        for k, o in self.open.items():
            if not o.alert.caused_by and o.alert.status == "raised" and explains(k, key):
                return o.alert.alert_id
        for k, (aid, at) in self.ended.items():
            if now - at < self.holdoff_s and explains(k, key):
                return aid
        return ""

    def _raise(self, a: Alert, now: float, brewing: set[str]) -> list[Alert]:
        k = key_of(a)
        o = self.open.get(k)
        if o is not None:
            o.held = None  # raised again within its hold-off: the same alert goes on
            return []
        if k in self.waiting:
            return []
        if not self._cause_of(k, now) and any(explains(b, k) for b in brewing):
            self.waiting[k] = a
            return []
        return self._send(a, now)

    def _send(self, a: Alert, now: float) -> list[Alert]:
        k = key_of(a)
        cause = self._cause_of(k, now)
        if cause:
            cause_key = next((ck for ck, o in self.open.items() if o.alert.alert_id == cause), None)
            cause_key = cause_key or next(ck for ck, (aid, _) in self.ended.items() if aid == cause)
            a = a.model_copy(
                update={"status": "suppressed", "caused_by": cause, "message": f"symptom of {cause_key}: {a.message}"}
            )
        self.open[k] = _Open(a)
        return [a]

    def _resolve(self, a: Alert, now: float, brewing: set[str]) -> list[Alert]:
        k = key_of(a)
        out: list[Alert] = []
        if k in self.waiting:  # raised and cleared while a cause was building up: sent as it is decided
            out += self._send(self.waiting.pop(k), now)
        o = self.open.get(k)
        if o is None:
            return [*out, a]  # not one of ours (a state from before the policy): passed on
        a = a.model_copy(update={"alert_id": o.alert.alert_id, "caused_by": o.alert.caused_by})
        if o.alert.status == "raised" and a.type in HELD and self.holdoff_s > 0:
            o.held = a
            return out
        del self.open[k]
        if k in INHIBITS and not o.alert.caused_by:
            self.ended[k] = (o.alert.alert_id, a.raised_at)
        return [*out, a]

    def clear(self, keys: Collection[str] | None = None) -> list[tuple[str, str, str, str]]:
        """Forget everything, or only the alerts of ``keys``; the (type, signal, alert id, caused_by) of each alert
        that was open, to resolve."""
        if keys is not None:
            out = [(o.alert.type, o.alert.signal, o.alert.alert_id, o.alert.caused_by)
                   for k, o in self.open.items() if k in keys]  # fmt: skip
            for k in keys:
                self.open.pop(k, None)
                self.ended.pop(k, None)
                self.waiting.pop(k, None)
            return out
        out = [(o.alert.type, o.alert.signal, o.alert.alert_id, o.alert.caused_by) for o in self.open.values()]
        self.open.clear()
        self.ended.clear()
        self.waiting.clear()
        return out

    def to_dict(self) -> dict:
        return {
            "holdoff_s": self.holdoff_s,
            "open": {
                k: [o.alert.model_dump(mode="json"), o.held.model_dump(mode="json") if o.held else None]
                for k, o in self.open.items()
            },
            "ended": {k: [aid, at] for k, (aid, at) in self.ended.items()},
            "waiting": {k: a.model_dump(mode="json") for k, a in self.waiting.items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> AlertPolicy:
        return cls(
            holdoff_s=float(d["holdoff_s"]),
            open={
                str(k): _Open(Alert.model_validate(a), Alert.model_validate(h) if h else None)
                for k, (a, h) in d["open"].items()
            },
            ended={str(k): (str(aid), float(at)) for k, (aid, at) in d["ended"].items()},
            waiting={str(k): Alert.model_validate(a) for k, a in d["waiting"].items()},
        )
