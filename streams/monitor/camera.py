"""Everything the worker watches on one camera: a registry of interchangeable detectors
(:class:`streams.monitor.base.Detector`), and the one place their changes become alerts.

:data:`DETECTORS`, in the order their alerts of one frame are sent and their statistics listed:

- :class:`streams.monitor.range.RangeDetector` (``health``): brightness, blur, contrast and saturation against
  the camera's reference range (``data_drift``);
- :class:`streams.monitor.faults.FeedDetector` (``feed``): frozen, black, over-exposed feed, low frame rate,
  clock skew, silence (``device_fault``), kept apart from drift;
- :class:`streams.monitor.upstream.UpstreamDetector` (``upstream``): a gateway that changed resolution,
  aspect ratio, encoding, frame rate or compression (``upstream_drift``);
- :class:`streams.monitor.windows.DistributionDetector` (``distributions``): the distributions of brightness,
  contrast, blur and saturation against the camera's reference window, Kolmogorov-Smirnov with Holm's
  correction (``data_drift``, signals ``<name>_distribution``): slower, subtler changes than the range rule's;
- :class:`streams.monitor.prediction.ClassMixDetector` (``classes``) and
  :class:`~streams.monitor.prediction.ConfidenceDetector` (``confidence``): what the model says
  (``prediction_drift``, signals ``class_mix`` and ``confidence``);
- :class:`streams.monitor.performance.PerformanceDetector` (``performance``): the precision the detections are
  expected to have from their scores, calibrated on the labelled frames (``prediction_drift``, signal
  ``expected_precision``), beside the precision and F1 measured on those;
- :class:`streams.monitor.embedding.EmbeddingDetector` (``embedding``): the sampled image embeddings, through
  an autoencoder fitted on the camera's first ones (``outlier`` for runs of outlying frames,
  ``embedding_drift`` when the score distribution moves);
- :class:`streams.monitor.concept.ConceptDetector` (``concept``): the model's error on frames that come back
  labelled (``concept_drift``);
- :class:`streams.monitor.motion.MovedDetector` (``moved``): the camera turned or shifted against its reference
  view (``domain_drift``), checked every ``motion_every`` frames.

The detectors whose references are what the model says (:data:`MODEL_DEPENDENT`: the class mix, the
confidence and the expected precision, whose calibration is the model's own too) learn them again when the
camera's frames go to another model (:meth:`CameraMonitor.switch_model`, after a promotion or a roll back); the
others keep theirs: the camera has not changed.

A detector's name is its key in the state; the monitor's attribute of that name is the detector's model
(``monitor.embedding`` is the :class:`~streams.monitor.embedding.EmbeddingDrift`), or None when the
settings turn it off. Adding a detector is a file with its class and a line in :data:`DETECTORS`.

Each raise has a deterministic alert id (camera, signal, frame), so a frame replayed after a crash raises
the same alert, which the store folds into one row; a resolve record carries the id of its raise.

State: :meth:`to_dict` is all of it (a few tens of KB, the reference view being most of it);
:meth:`essential` is the part that changes only on events, which the worker writes to its changelog at
once, the rest being written every few frames. :func:`split_reference` takes the reference view out of
a state, for the worker to save only when it changes; :func:`join_reference` puts it back.

A state is data only (JSON: numbers, strings, lists; arrays as base64 with a declared dtype and shape, the
reference view as a PNG), versioned (:data:`STATE_VERSION`). :func:`restore` reads one back; a state that
cannot be read (another version, a missing field, a wrong shape, anything hostile) is logged and the camera
learns its references again: a changelog record can cost a camera its references, never stop a worker.
"""

from __future__ import annotations

import base64
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from core.contracts import Alert, CameraView, DriftStatistic, Evidence, FrameMetrics
from core.monitoring import MonitorSettings
from streams.monitor.base import Change, Detector, Frame, Labelled, Observation, Tick, Where, alert_id, make_alert
from streams.monitor.concept import ConceptDetector
from streams.monitor.embedding import EmbeddingDetector
from streams.monitor.faults import FeedDetector
from streams.monitor.motion import MovedDetector
from streams.monitor.performance import PerformanceDetector
from streams.monitor.policy import AlertPolicy
from streams.monitor.prediction import ClassMixDetector, ConfidenceDetector
from streams.monitor.range import EVIDENCE_FRAMES, RangeDetector
from streams.monitor.state import StateError, mapping, version
from streams.monitor.upstream import UpstreamDetector
from streams.monitor.windows import DISTRIBUTION_SIGNALS, DistributionDetector

log = logging.getLogger("cvops.monitor")
STATE_VERSION = 1  # of CameraMonitor.to_dict; a state of any other version is learned again

__all__ = ["DETECTORS", "DISTRIBUTION_SIGNALS", "CameraMonitor", "MonitorSettings", "restore"]

# The camera's detectors. Their alerts of one frame go to the alert policy in this order (causes are ranked
# there), and their statistics are listed in it; the range rule comes first.
DETECTORS: tuple[type[Detector], ...] = (
    RangeDetector,
    FeedDetector,
    UpstreamDetector,
    DistributionDetector,
    ClassMixDetector,
    ConfidenceDetector,
    PerformanceDetector,
    EmbeddingDetector,
    ConceptDetector,
    MovedDetector,
)

# The detectors whose references are the model's own output, and the alert keys ("type:signal") they raise: learned
# again when the camera's frames go to another model.
MODEL_DEPENDENT: dict[str, tuple[str, ...]] = {
    ClassMixDetector.name: ("prediction_drift:class_mix",),
    ConfidenceDetector.name: ("prediction_drift:confidence",),
    PerformanceDetector.name: ("prediction_drift:expected_precision",),
}


@dataclass
class CameraMonitor:
    camera_id: str
    detectors: dict[str, Detector] = field(default_factory=dict)  # name -> detector, in DETECTORS' order
    policy: AlertPolicy = field(default_factory=AlertPolicy)  # one alert per cause, no flapping
    active: dict[str, str] = field(default_factory=dict)  # "kind:signal" -> alert id of the raise
    frames: int = 0
    relearned_at: float = 0.0  # unix s of the operator's last relearn request this monitor honoured
    model: str = ""  # name@version of the model its MODEL_DEPENDENT references were learned from; "" unknown yet
    # the ids of the last frames, the evidence of an alert raised now; not persisted
    recent: deque = field(default_factory=lambda: deque(maxlen=EVIDENCE_FRAMES), repr=False)
    previous_small: np.ndarray | None = field(default=None, repr=False)  # for frame_diff; not persisted
    # (frame id, captured at, JPEG, (w, h), (source w, source h)) of the last frames, as evidence; not persisted
    thumbnails: deque = field(default_factory=lambda: deque(maxlen=EVIDENCE_FRAMES), repr=False)
    edge_hour: int = field(default=0, repr=False)  # the hour (unix s // 3600) edge cases are counted in; not persisted
    edge_count: int = field(default=0, repr=False)
    sampled_at: float = field(default=0.0, repr=False)  # capture time of the last sampled statistics; not persisted
    viewed_at: float = field(default=0.0, repr=False)  # capture time of the last latest view sent; not persisted
    reference_sent: object = field(default=None, repr=False)  # the reference view last sent; not persisted

    def __getattr__(self, name: str):
        """A registered detector's model by its name (``monitor.feed``), or None when it is off."""
        if name.startswith("__") or name not in {d.name for d in DETECTORS}:
            raise AttributeError(name)
        det = self.__dict__.get("detectors", {}).get(name)
        return None if det is None else getattr(det, "inner", det)

    @classmethod
    def new(cls, camera_id: str, s: MonitorSettings) -> CameraMonitor:
        return cls(
            camera_id=camera_id,
            detectors=_detectors(camera_id, s, {}),
            policy=AlertPolicy(holdoff_s=s.alert_holdoff_s),
        )

    def _alerts(self, obs: Observation, where: Where) -> list[Alert]:
        return [make_alert(c, where, self.active) for d in self.detectors.values() for c in d.observe(obs)]

    def observe(
        self,
        m: FrameMetrics,
        small: np.ndarray,
        arrived_at: float,
        cooldown_s: float,
        frame_diff: float | None,
        black: bool,
        over_exposed: float,
        labels: Sequence[str] = (),
        scores: Sequence[float] = (),
    ) -> list[Alert]:
        """Feed one frame (its metrics and its detections' labels and scores); the alerts it raises or
        resolves, of every type, as the alert policy sends them (one per cause, no flapping)."""
        self.frames += 1
        self.previous_small = small
        self.recent.append(m.frame_id)
        obs = Frame(m, small, arrived_at, cooldown_s, frame_diff, black, over_exposed, labels, scores)
        where = Where(m.camera_id, m.frame_id, m.model_name, m.model_version, m.processed_at, self.frames,
                      list(self.recent))  # fmt: skip
        return self.policy.apply(self._alerts(obs, where), m.processed_at, self.brewing())

    def check_silence(self, now: float, model_name: str = "", model_version: str = "") -> list[Alert]:
        """The worker's timer: has the feed gone silent? ``now`` is unix s."""
        where = Where(self.camera_id, "", model_name, model_version, now, self.frames)
        return self.policy.apply(self._alerts(Tick(self.camera_id, now), where), now, self.brewing())

    def observe_feedback(
        self,
        frame_id: str,
        error: float,
        at: float,
        model_name: str,
        model_version: str,
        scores: Sequence[float] = (),
        hits: Sequence[bool] = (),
        truths: int = 0,
        predicted_by: str = "",
    ) -> list[Alert]:
        """Feed the model's error on one labelled frame (0-1, see :func:`streams.monitor.concept.frame_error`),
        and its detections' scores, whether each matched a true object and how many true objects it has
        (:func:`streams.monitor.concept.match`: the performance estimate's calibration). A frame
        ``predicted_by`` (name@version) another model than the camera's now, labelled after a switch, is kept
        from the :data:`MODEL_DEPENDENT` detectors: it says nothing of the model they learn."""
        where = Where(self.camera_id, frame_id, model_name, model_version, at, self.frames, list(self.recent))
        obs = Labelled(frame_id, error, at, scores, hits, truths)
        other = bool(predicted_by and self.model and predicted_by != self.model)
        alerts = [
            make_alert(c, where, self.active)
            for name, d in self.detectors.items()
            if not (other and name in MODEL_DEPENDENT)
            for c in d.observe(obs)
        ]
        return self.policy.apply(alerts, at) if alerts else []

    def brewing(self) -> set[str]:
        """The causes building up (a run of black, frozen or over-exposed frames, of frames in another format,
        of moved comparisons) that have not raised yet, as "type:signal" keys: the policy holds back the
        raises they would explain until they raise or their run breaks."""
        return set().union(*(d.brewing() for d in self.detectors.values()))

    def sample(self, m: FrameMetrics, every_s: float) -> dict:
        """What to add to frame ``m``'s metrics once :meth:`observe` has seen it: its ``outlier_score`` when
        its embedding was scored, and every ``every_s`` seconds of capture time (0 = never) the ``drift``
        statistics of :meth:`statistics`. Empty for most frames."""
        out: dict = {}
        for d in self.detectors.values():
            out |= d.annotate(m)
        # A capture time behind the last sample's (a camera clock set back, or one absurd frame before)
        # samples at once, rather than wait for the clock to catch up.
        if every_s and not 0 <= m.captured_at - self.sampled_at < every_s:
            stats = self.statistics()
            if stats:
                out["drift"] = stats
            self.sampled_at = m.captured_at
            for d in self.detectors.values():
                d.sampled()
        return out

    def statistics(self) -> list[DriftStatistic]:
        """Every ready detector's statistics now, with the threshold each is held to (detectors still
        learning their reference give none): see each detector's ``statistics``."""
        return [s for d in self.detectors.values() for s in d.statistics()]

    def apply(self, s: MonitorSettings) -> None:
        """Take the thresholds of ``s`` at once (see :data:`core.fleetconfig.LIVE`); sizes and the
        range rule's tolerance shape what is learned, and apply when the references are learned again."""
        self.policy.holdoff_s = s.alert_holdoff_s
        for d in self.detectors.values():
            d.configure(s)

    def switch_model(self, model: str, s: MonitorSettings, now: float, previous: tuple[str, str]) -> list[Alert]:
        """The camera's frames go to ``model`` (name@version) from now on: when that is another model than the one
        its references were learned from, the :data:`MODEL_DEPENDENT` detectors start over (their open alerts
        resolved, with ``previous``, the model before, as (name, version)) and the others keep their
        references. A monitor that does not know its model yet (new, or from an older state) takes ``model``."""
        if model == self.model:
            return []
        known, self.model = self.model, model
        if not known:
            return []
        keys = {k for name in MODEL_DEPENDENT for k in MODEL_DEPENDENT[name]}
        why = f"its frames go to {model} now: the model's references are being learned again"
        resolved = self.resolve_all(now, *previous, why, keys=keys, detectors=set(MODEL_DEPENDENT))
        fresh = {k.name: k.new(s, self.camera_id) for k in DETECTORS if k.name in MODEL_DEPENDENT}
        self.detectors = {
            k.name: det
            for k in DETECTORS
            if (det := fresh.get(k.name) if k.name in MODEL_DEPENDENT else self.detectors.get(k.name)) is not None
        }
        return resolved

    def resolve_all(
        self, now: float, model_name: str, model_version: str, why: str, keys=None, detectors=None
    ) -> list[Alert]:
        """Resolve every open alert of this camera (its references are about to be learned again), or those of
        ``keys`` ("type:signal") only, the ``detectors`` named (their names) forgetting theirs."""
        open_alerts = self.policy.clear(keys)  # with the ids and causes the policy sent them with
        sent = {(kind, signal) for kind, signal, _, _ in open_alerts}
        kept = [(*k.split(":", 1), aid) for k, aid in self.active.items() if keys is None or k in keys]
        kept += [x for n, d in self.detectors.items() if detectors is None or n in detectors for x in d.forget()]
        open_alerts += [(kind, signal, aid, "") for kind, signal, aid in kept if (kind, signal) not in sent]
        for k in list(self.active):
            if keys is None or k in keys:
                del self.active[k]
        where = Where(self.camera_id, "", model_name, model_version, now, self.frames)
        changes = [
            Change(kind, signal, "resolved", 0.0, 0.0, why, alert_id=aid, severity="info", caused_by=cause)
            for kind, signal, aid, cause in open_alerts
        ]
        return [make_alert(c, where, {}) for c in changes]

    def keep_thumbnail(
        self, frame_id: str, captured_at: float, jpeg: bytes, size: tuple[int, int], source: tuple[int, int]
    ) -> None:
        """Hold a frame's thumbnail while it is among the last few: an alert raised now shows them."""
        self.thumbnails.append((frame_id, captured_at, jpeg, size, source))

    def edge_case(self, frame_id: str, captured_at: float, reason: str, score: float, per_hour: int) -> Evidence | None:
        """The frame's thumbnail as an edge case (``reason``: outlier, low_confidence), unless this camera has
        kept ``per_hour`` of them in the frame's hour already or no longer holds the thumbnail. Its id is derived
        from the camera, the reason and the frame, so a replayed frame gives the same record."""
        hour = int(captured_at // 3600)
        if hour != self.edge_hour:
            self.edge_hour, self.edge_count = hour, 0
        if self.edge_count >= per_hour:
            return None
        held = next((t for t in reversed(self.thumbnails) if t[0] == frame_id), None)
        if held is None:
            return None
        self.edge_count += 1
        return Evidence(
            alert_id=alert_id(self.camera_id, f"edge/{reason}", frame_id),
            camera_id=self.camera_id,
            frame_id=frame_id,
            role="edge_case",
            reason=reason,
            score=round(float(score), 4),
            **_thumbnail_fields(held),
        )

    def views(self, every_s: float) -> list[CameraView]:
        """The camera's latest view (the newest thumbnail held) when ``every_s`` capture seconds have passed
        since the last one (0 = never), and its moved-camera reference view along with it when that one is
        new since the last sent. A capture time behind the last view's counts as due: one frame stamped in the
        future must not hold back the views until that time."""
        if not every_s or not self.thumbnails:
            return []
        newest = self.thumbnails[-1]
        fid, at = newest[0], newest[1]
        if 0 <= at - self.viewed_at < every_s:
            return []
        self.viewed_at = at
        latest = _thumbnail_fields(newest)
        out = [CameraView(camera_id=self.camera_id, role="latest", frame_id=fid, **latest)]
        ref = self.moved.reference if self.moved is not None else None
        if ref is not None and ref is not self.reference_sent and (view := self._reference_view(latest)):
            self.reference_sent = ref
            out.append(CameraView(camera_id=self.camera_id, role="reference", frame_id=f"reference:{fid}", **view))
        return out

    def _reference_view(self, beside: dict) -> dict | None:
        """The moved-camera check's reference view as thumbnail fields, timed and sized for the source frame
        of ``beside`` (another thumbnail's fields); None without a reference, or if it cannot be encoded."""
        ref = self.moved.reference if self.moved is not None else None
        if ref is None:
            return None
        ok, jpg = cv2.imencode(".jpg", ref, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if not ok:
            return None
        return {
            **beside,
            "width": ref.shape[1],
            "height": ref.shape[0],
            "image_b64": base64.b64encode(jpg.tobytes()).decode(),
        }

    def evidence(self, alert: Alert) -> list[Evidence]:
        """Thumbnails of the alert's evidence frames still held, oldest first; for a moved camera, its
        reference view too (what the frames were compared with)."""
        wanted = set(alert.evidence_frame_ids)
        held = [h for h in self.thumbnails if h[0] in wanted]
        out = [
            Evidence(alert_id=alert.alert_id, camera_id=self.camera_id, frame_id=h[0], **_thumbnail_fields(h))
            for h in held
        ]
        if alert.type == "domain_drift" and held and (view := self._reference_view(_thumbnail_fields(held[-1]))):
            out.append(
                Evidence(alert_id=alert.alert_id, camera_id=self.camera_id, frame_id=f"reference:{alert.alert_id}",
                         role="reference", **view)
            )  # fmt: skip
        return out

    # -- state --------------------------------------------------------------------------------------------

    def essential(self) -> dict:
        """The part of the state that changes only on events (reference learned, alert raised or cleared)."""
        return {
            **{k.name: d.essential() if (d := self.detectors.get(k.name)) else None for k in DETECTORS},
            "active": dict(self.active),
            "relearned_at": self.relearned_at,
            "model": self.model,
            "policy": self.policy.to_dict(),
        }

    def to_dict(self) -> dict:
        return {
            "kind": "camera",
            "version": STATE_VERSION,
            "camera_id": self.camera_id,
            **{k.name: d.to_dict() if (d := self.detectors.get(k.name)) else None for k in DETECTORS},
            "active": dict(self.active),
            "frames": self.frames,
            "relearned_at": self.relearned_at,
            "model": self.model,
            "policy": self.policy.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict, settings: MonitorSettings | None = None) -> CameraMonitor:
        """The monitor ``d`` describes. A state saved before a detector existed gets that detector new, as
        ``settings`` (the fleet's) configure it. Raises on a state it cannot read: see :func:`restore`."""
        d = version(d, "camera", STATE_VERSION)
        if not isinstance(d["camera_id"], str):
            raise StateError("camera_id: a string expected")
        s = settings or MonitorSettings()
        return cls(
            camera_id=d["camera_id"],
            detectors=_detectors(d["camera_id"], s, d),
            active={str(k): str(v) for k, v in mapping(d["active"], "active").items()},
            frames=int(d["frames"]),
            relearned_at=float(d.get("relearned_at", 0.0)),
            model=str(d.get("model") or ""),  # a state from before: the model is learned from the next frame
            # A state from before the policy: none of its alerts is held or a symptom; they resolve as sent.
            policy=AlertPolicy.from_dict(d["policy"]) if d.get("policy") else AlertPolicy(holdoff_s=s.alert_holdoff_s),
        )


def _detectors(camera_id: str, s: MonitorSettings, saved: dict) -> dict[str, Detector]:
    """The camera's detectors (:data:`DETECTORS`): from ``saved`` (a state), or as ``s`` configure them. A
    detector a state lacks is new (one added since), none, or the state cannot be read: its ``missing``."""
    out: dict[str, Detector] = {}
    for kind in DETECTORS:
        if (saved and kind.missing == "error") or saved.get(kind.name):
            det = kind.from_dict(saved[kind.name])
        elif not saved or kind.missing == "new":
            det = kind.new(s, camera_id)
        else:
            det = None
        if det is not None:
            out[kind.name] = det
    return out


def restore(camera_id: str, state: object, settings: MonitorSettings) -> tuple[CameraMonitor, bool]:
    """The camera's monitor rebuilt from its saved ``state`` with ``settings`` applied, and True; or a new
    monitor, which learns the camera's references again, and False: when there is no state, or when it
    cannot be read (another version, a field missing or of the wrong type or shape, another camera's state,
    anything hostile). That is logged once, here; nothing in a state is ever run.

    >>> monitor, restored = restore("cam-1", {"version": 0}, MonitorSettings())
    >>> restored, monitor.frames
    (False, 0)
    """
    if not state:
        return CameraMonitor.new(camera_id, settings), False
    try:
        monitor = CameraMonitor.from_dict(state, settings)
        if monitor.camera_id != camera_id:
            raise StateError(f"the state of camera {monitor.camera_id!r}")
        monitor.apply(settings)
        return monitor, True
    except Exception as exc:  # whatever a state holds, the camera starts over rather than the worker stop
        log.warning(
            "camera %s: its saved state cannot be read (%s: %s); its references are learned again",
            camera_id,
            type(exc).__name__,
            str(exc)[:300],
        )
        return CameraMonitor.new(camera_id, settings), False


REFERENCE_ELSEWHERE = "reference_elsewhere"  # in a state without its reference view (split_reference)


def split_reference(state: dict | None) -> tuple[dict | None, str | None]:
    """``state`` (:meth:`CameraMonitor.to_dict`) without the moved-camera check's reference view, and that
    view (base64 PNG), or ``(state, None)`` when it has none. The view is about half of a state's bytes and
    changes only when a reference is learned, so the worker saves it apart, and only then.

    >>> state = {"camera_id": "cam-1", "moved": {"reference_png": "iVBORw0K", "seen": 7}}
    >>> slim, view = split_reference(state)
    >>> slim["moved"]["reference_png"], view
    (None, 'iVBORw0K')
    >>> join_reference(slim, view) == state
    True
    """
    moved = (state or {}).get("moved") or {}
    view = moved.get("reference_png")
    if view is None:
        return state, None
    return {**state, "moved": {**moved, "reference_png": None}, REFERENCE_ELSEWHERE: True}, view


def join_reference(state: dict | None, view: str | None) -> dict | None:
    """A state from :func:`split_reference` whole again with its ``view``; any other state as it is. A state
    whose view is lost (``None``) comes back without a reference: the moved-camera check learns a new one."""
    if not state or not state.get(REFERENCE_ELSEWHERE):
        return state
    joined = {k: v for k, v in state.items() if k != REFERENCE_ELSEWHERE}
    joined["moved"] = {**joined["moved"], "reference_png": view}
    return joined


def _thumbnail_fields(held: tuple) -> dict:
    """The thumbnail fields of the contracts (:class:`Evidence`, :class:`CameraView`) for a frame the monitor
    holds: (frame id, captured at, JPEG, (w, h), (source w, source h))."""
    _, at, jpeg, size, src = held
    return {
        "captured_at": at,
        "width": size[0],
        "height": size[1],
        "source_width": src[0],
        "source_height": src[1],
        "image_b64": base64.b64encode(jpeg).decode(),
    }
