"""Everything the worker watches on one camera, composed: a list of interchangeable detectors.

- :class:`streams.rules.CameraHealth`: brightness, blur, contrast and saturation against the camera's reference range
  (``data_drift``);
- :class:`streams.monitor.faults.FeedHealth`: frozen, black, over-exposed feed, low frame rate, clock
  skew, silence (``device_fault``), kept apart from drift;
- :class:`streams.monitor.upstream.UpstreamDrift`: a gateway that changed resolution, aspect ratio,
  encoding, frame rate or compression (``upstream_drift``);
- :class:`streams.monitor.motion.CameraMoved`: the camera turned or shifted against its reference view
  (``domain_drift``), checked every ``motion_every`` frames;
- :class:`streams.monitor.windows.MultiKS`: the distributions of brightness, contrast, blur and saturation
  against the camera's reference window, Kolmogorov-Smirnov with Holm's correction (``data_drift``, signals
  ``<name>_distribution``): slower, subtler changes than the range rule's;
- :class:`streams.monitor.prediction.ClassDistributionDrift` and
  :class:`~streams.monitor.prediction.ConfidenceDrift`: what the model says (``prediction_drift``, signals
  ``class_mix`` and ``confidence``);
- :class:`streams.monitor.embedding.EmbeddingDrift`: the sampled image embeddings, through an autoencoder
  fitted on the camera's first ones (``outlier`` for runs of outlying frames, ``embedding_drift`` when the
  score distribution moves).

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
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace

import cv2
import numpy as np

from core.contracts import Alert, CameraView, DriftStatistic, Evidence, FrameMetrics
from core.monitoring import MonitorSettings
from streams.monitor.concept import ConceptDrift
from streams.monitor.embedding import EmbeddingDrift
from streams.monitor.faults import FeedHealth
from streams.monitor.motion import CameraMoved
from streams.monitor.policy import AlertPolicy
from streams.monitor.prediction import ClassDistributionDrift, ConfidenceDrift
from streams.monitor.state import StateError, mapping, version
from streams.monitor.upstream import UpstreamDrift
from streams.monitor.windows import MultiKS, holm_levels
from streams.rules import EVIDENCE_FRAMES, CameraHealth, alert_id

log = logging.getLogger("cvops.monitor")
STATE_VERSION = 1  # of CameraMonitor.to_dict; a state of any other version is learned again


# The image signals whose distributions are tested (data_drift, "<name>_distribution").
DISTRIBUTION_SIGNALS = ("brightness", "contrast", "blur", "saturation")


@dataclass
class CameraMonitor:
    camera_id: str
    health: CameraHealth
    feed: FeedHealth
    upstream: UpstreamDrift
    moved: CameraMoved | None
    distributions: MultiKS | None = None
    classes: ClassDistributionDrift | None = None
    confidence: ConfidenceDrift | None = None
    embedding: EmbeddingDrift | None = None
    concept: ConceptDrift | None = None
    policy: AlertPolicy = field(default_factory=AlertPolicy)  # one alert per cause, no flapping
    active: dict[str, str] = field(default_factory=dict)  # "kind:signal" -> alert id of the raise
    frames: int = 0
    relearned_at: float = 0.0  # unix s of the operator's last relearn request this monitor honoured
    previous_small: np.ndarray | None = field(default=None, repr=False)  # for frame_diff; not persisted
    # (frame id, captured at, JPEG, (w, h), (source w, source h)) of the last frames, as evidence; not persisted
    thumbnails: deque = field(default_factory=lambda: deque(maxlen=EVIDENCE_FRAMES), repr=False)
    edge_hour: int = field(default=0, repr=False)  # the hour (unix s // 3600) edge cases are counted in; not persisted
    edge_count: int = field(default=0, repr=False)
    sampled_at: float = field(default=0.0, repr=False)  # capture time of the last sampled statistics; not persisted
    outlier_peak: float | None = field(default=None, repr=False)  # highest outlier score since then; not persisted
    viewed_at: float = field(default=0.0, repr=False)  # capture time of the last latest view sent; not persisted
    reference_sent: object = field(default=None, repr=False)  # the reference view last sent; not persisted

    @classmethod
    def new(cls, camera_id: str, s: MonitorSettings) -> CameraMonitor:
        return cls(
            camera_id=camera_id,
            health=CameraHealth.new(camera_id, warmup=s.warmup, tolerance=s.tolerance, consecutive=s.consecutive),
            feed=FeedHealth(expected_fps=s.expected_fps, no_frames_s=s.no_frames_s),
            upstream=UpstreamDrift(reference=s.warmup),
            moved=CameraMoved(
                threshold_deg=s.motion_threshold_deg,
                threshold_px=s.motion_threshold_px,
                consecutive=3,
                every=s.motion_every,
                lost_is_moved=False,  # a lost view is a black or covered lens: a device fault, not a move
            )
            if s.motion_every
            else None,
            policy=AlertPolicy(holdoff_s=s.alert_holdoff_s),
            **cls.drift_detectors(s),
        )

    @staticmethod
    def drift_detectors(s: MonitorSettings) -> dict:
        """The distribution, prediction and embedding detectors ``s`` turns on, new."""
        out: dict = {}
        if s.ks_reference:
            out["distributions"] = MultiKS(
                DISTRIBUTION_SIGNALS, reference=s.ks_reference, window=s.ks_window, every=s.ks_every, alpha=s.ks_alpha
            )
        if s.prediction_reference:
            out["classes"] = ClassDistributionDrift(
                reference=s.prediction_reference, window=s.prediction_window, alpha=s.prediction_alpha
            )
            out["confidence"] = ConfidenceDrift(reference=s.prediction_reference, window=s.prediction_window)
        if s.embedding_reference:
            out["embedding"] = EmbeddingDrift(reference=s.embedding_reference)
        if s.concept_reference:
            out["concept"] = ConceptDrift(reference=s.concept_reference)
        return out

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
        alerts = self.health.observe(m, cooldown_s)
        self.feed.update(
            captured_at=m.captured_at,
            arrived_at=arrived_at,
            frame_diff=frame_diff,
            black=black,
            over_exposed=over_exposed,
        )
        alerts += self._changes(m, "device_fault", self.feed.changes, self._feed_value)
        before = set(self.upstream.drifted)
        self.upstream.update(m.width, m.height, m.encoding, captured_at=m.captured_at, nbytes=m.bytes)
        after = set(self.upstream.drifted)
        changes = [(k, "raised") for k in sorted(after - before)] + [(k, "resolved") for k in sorted(before - after)]
        alerts += self._changes(m, "upstream_drift", changes, self._upstream_value)
        if self.moved is not None:
            was = self.moved.drift_detected
            self.moved.update(small)
            now = self.moved.drift_detected
            if now != was:
                alerts += self._changes(m, "domain_drift", [("camera_moved", "raised" if now else "resolved")],
                                        self._motion_value)  # fmt: skip
        alerts += self._drift(m, labels, scores)
        return self.policy.apply(alerts, m.processed_at, self.brewing())

    def brewing(self) -> set[str]:
        """The causes building up (a run of black, frozen or over-exposed frames, of frames in another format,
        of moved comparisons) that have not raised yet, as "type:signal" keys: the policy holds back the
        raises they would explain until they raise or their run breaks."""
        out = {f"device_fault:{f}" for f, run in self.feed.runs.items() if run and f not in self.feed.faults}
        out |= {
            f"upstream_drift:{k}" for k, run in self.upstream.runs.items() if run and k not in self.upstream.drifted
        }
        if self.moved is not None and self.moved.run and not self.moved.drift_detected:
            out.add("domain_drift:camera_moved")
        return out

    def _drift(self, m: FrameMetrics, labels: Sequence[str], scores: Sequence[float]) -> list[Alert]:
        alerts = []
        if self.distributions is not None:
            before = set(self.distributions.drifted)
            # Rounded: the windows travel through the changelog as JSON, and 3 decimals are plenty for a test.
            self.distributions.update({name: round(float(getattr(m, name)), 3) for name in DISTRIBUTION_SIGNALS})
            after = set(self.distributions.drifted)
            changes = [(f"{k}_distribution", "raised") for k in sorted(after - before)]
            changes += [(f"{k}_distribution", "resolved") for k in sorted(before - after)]
            alerts += self._changes(m, "data_drift", changes, self._distribution_value)
        if self.classes is not None:
            for name, det, feed in (("class_mix", self.classes, labels), ("confidence", self.confidence, scores)):
                was = det.drift_detected
                det.update([round(float(v), 4) for v in feed] if name == "confidence" else feed)
                if det.drift_detected != was:
                    status = "raised" if det.drift_detected else "resolved"
                    alerts += self._changes(m, "prediction_drift", [(name, status)], self._prediction_value)
        if self.embedding is not None and m.embedding:
            e = self.embedding
            was_outlier, was_drift = e.outlier, e.drift_detected
            e.update(m.embedding)
            if e.outlier != was_outlier:
                status = "raised" if e.outlier else "resolved"
                alerts += self._changes(m, "outlier", [("embedding_outlier", status)], self._embedding_value)
            if e.drift_detected != was_drift:
                status = "raised" if e.drift_detected else "resolved"
                alerts += self._changes(m, "embedding_drift", [("embedding_score", status)], self._embedding_value)
        return alerts

    def sample(self, m: FrameMetrics, every_s: float) -> dict:
        """What to add to frame ``m``'s metrics once :meth:`observe` has seen it: its ``outlier_score`` when
        its embedding was scored, and every ``every_s`` seconds of capture time (0 = never) the ``drift``
        statistics of :meth:`statistics`. Empty for most frames."""
        out: dict = {}
        e = self.embedding
        if m.embedding and e is not None and e.fitted and math.isfinite(e.score):
            out["outlier_score"] = min(max(e.score, 0.0), 1e12)  # the contract's bounds
            self.outlier_peak = max(e.score, self.outlier_peak or 0.0)
        # A capture time behind the last sample's (a camera clock set back, or one absurd frame before)
        # samples at once, rather than wait for the clock to catch up.
        if every_s and not 0 <= m.captured_at - self.sampled_at < every_s:
            stats = self.statistics()
            if stats:
                out["drift"] = stats
            self.sampled_at, self.outlier_peak = m.captured_at, None
        return out

    def statistics(self) -> list[DriftStatistic]:
        """Every ready detector's statistic now, with the threshold it is held to (detectors still learning
        their reference give none). Detector, signal and meaning:

        - ``ks_holm``, ``<signal>_distribution``: the KS p-value of the window against the reference, and the
          level Holm's correction holds it to; drift below it.
        - ``chi_square``, ``class_mix``: p-value of the classes detected against the reference, and alpha.
        - ``z_test``, ``confidence``: z-score of the mean detection score against the reference, and the
          z it must exceed (either way; the shift must also exceed the minimum delta).
        - ``autoencoder``, ``embedding_outlier``: the highest outlier score since the last sample (or the
          last score), and the calibrated threshold.
        - ``ks``, ``embedding_score``: KS p-value of recent outlier scores against the reference's, and alpha.
        - ``adwin``, ``error``: recent error rate on labelled frames, and the rate that counts as drift.
        - ``orb_affine``, ``rotation_deg`` and ``shift_px``: the camera's measured turn and shift against its
          reference view, and their thresholds (when the last comparison found enough matches).
        """
        out: list[DriftStatistic] = []

        def add(detector: str, signal: str, statistic: float, threshold: float, drift: bool, window: int) -> None:
            if math.isfinite(statistic) and math.isfinite(threshold):
                # within the contract's bounds: a z-score over a constant reference can be huge, never a crash
                statistic, threshold = (max(-1e12, min(1e12, v)) for v in (statistic, threshold))
                out.append(DriftStatistic(detector=detector, signal=signal, statistic=statistic,
                                          threshold=threshold, drift=drift, window=window))  # fmt: skip

        if (d := self.distributions) is not None:
            full = {n: w for n, w in d.windows.items() if w.ready and len(w.window) == w.window_size}
            levels = holm_levels({n: w.p_value for n, w in full.items()}, d.alpha)
            for n, w in full.items():
                add("ks_holm", f"{n}_distribution", w.p_value, levels[n], n in d.drifted, w.window_size)
        if (c := self.classes) is not None and c.ready and len(c.window) == c.window_size:
            add("chi_square", "class_mix", c.p_value, c.alpha, c.drift_detected, c.window_size)
        if (z := self.confidence) is not None and z.ready and len(z.window) == z.window_size:
            add("z_test", "confidence", z.z_score, z.z, z.drift_detected, z.window_size)
        if (e := self.embedding) is not None and e.fitted:
            peak = self.outlier_peak if self.outlier_peak is not None else e.score
            add("autoencoder", "embedding_outlier", peak, e.threshold, e.outlier, e.consecutive)
            w = e.scores
            if w.ready and len(w.window) == w.window_size:
                add("ks", "embedding_score", w.p_value, w.alpha, e.drift_detected, w.window_size)
        if (k := self.concept) is not None and k.ready:
            recent = sum(k.recent) / len(k.recent) if k.recent else 0.0
            add("adwin", "error", recent, k.reference_mean + k.min_increase, k.drift_detected, len(k.recent))
        if (mv := self.moved) is not None and mv.last.ok:
            add("orb_affine", "rotation_deg", abs(mv.last.angle_deg), mv.threshold_deg, mv.drift_detected, 1)
            add("orb_affine", "shift_px", math.hypot(mv.last.dx, mv.last.dy), mv.threshold_px, mv.drift_detected, 1)
        return out

    def apply(self, s: MonitorSettings) -> None:
        """Take the thresholds of ``s`` at once (see :data:`streams.fleetconfig.LIVE`); sizes and the
        range rule's tolerance shape what is learned, and apply when the references are learned again."""
        for rule in self.health.detectors.values():
            rule.consecutive = s.consecutive
        self.feed.expected_fps, self.feed.no_frames_s = s.expected_fps, s.no_frames_s
        self.policy.holdoff_s = s.alert_holdoff_s
        if self.moved is not None:
            self.moved.threshold_deg, self.moved.threshold_px = s.motion_threshold_deg, s.motion_threshold_px
        if self.distributions is not None:
            self.distributions.alpha = s.ks_alpha
        if self.classes is not None:
            self.classes.alpha = s.prediction_alpha

    def resolve_all(self, now: float, model_name: str, model_version: str, why: str) -> list[Alert]:
        """Resolve every open alert of this camera (its references are about to be learned again)."""
        open_alerts = self.policy.clear()  # with the ids and causes the policy sent them with
        sent = {(kind, signal) for kind, signal, _, _ in open_alerts}
        open_alerts += [
            (kind, signal, aid, "")
            for kind, signal, aid in [(*k.split(":", 1), aid) for k, aid in self.active.items()]
            + [("data_drift", signal, aid) for signal, aid in self.health.active.items()]
            if (kind, signal) not in sent
        ]
        self.active.clear()
        self.health.active.clear()
        return [
            Alert(
                alert_id=aid,
                type=kind,
                status="resolved",
                severity="info",
                camera_id=self.camera_id,
                signal=signal,
                value=0.0,
                threshold=0.0,
                window=self.frames,
                model_name=model_name,
                model_version=model_version,
                raised_at=now,
                message=f"{kind.replace('_', ' ')} cleared on camera {self.camera_id}: {why}",
                caused_by=cause,
            )
            for kind, signal, aid, cause in open_alerts
        ]

    def observe_feedback(
        self, frame_id: str, error: float, at: float, model_name: str, model_version: str
    ) -> list[Alert]:
        """Feed the model's error on one labelled frame (0-1, see :func:`streams.monitor.concept.frame_error`)."""
        if self.concept is None:
            return []
        was = self.concept.drift_detected
        self.concept.update(error)
        if self.concept.drift_detected == was:
            return []
        status = "raised" if self.concept.drift_detected else "resolved"
        where = SimpleNamespace(
            camera_id=self.camera_id, frame_id=frame_id, model_name=model_name, model_version=model_version,
            processed_at=at,
        )  # fmt: skip
        return self.policy.apply(
            self._changes(where, "concept_drift", [("label_error", status)], self._concept_value), at
        )

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

    def check_silence(self, now: float, model_name: str = "", model_version: str = "") -> list[Alert]:
        """The worker's timer: has the feed gone silent? ``now`` is unix s."""
        self.feed.check(now)
        out = []
        for fault, status in self.feed.changes:
            key = f"device_fault:{fault}"
            if status == "raised":
                aid = alert_id(self.camera_id, fault, f"silent-since-{self.feed.last_arrival}")
                self.active[key] = aid
            else:
                aid = self.active.pop(key, alert_id(self.camera_id, fault, "unknown"))
            gap = self.feed.silent_for(now)  # less the checks' lead while the worker catches up on a backlog
            out.append(
                Alert(
                    alert_id=aid,
                    type="device_fault",
                    status=status,
                    severity="critical",
                    camera_id=self.camera_id,
                    signal=fault,
                    value=gap,
                    threshold=self.feed.no_frames_s,
                    window=0,
                    model_name=model_name,
                    model_version=model_version,
                    raised_at=now,
                    message=f"camera {self.camera_id} sent no frame for {gap:.0f} s",
                )
            )
        return self.policy.apply(out, now, self.brewing())

    # -- alerts -------------------------------------------------------------------------------------------

    def _changes(self, m: FrameMetrics, kind: str, changes: Sequence[tuple[str, str]], value) -> list[Alert]:
        out = []
        for signal, status in changes:
            key = f"{kind}:{signal}"
            if status == "raised":
                aid = alert_id(m.camera_id, f"{kind}/{signal}", m.frame_id)
                self.active[key] = aid
            else:
                aid = self.active.pop(key, alert_id(m.camera_id, f"{kind}/{signal}", "unknown"))
            v, threshold, text = value(signal)
            verb = "raised" if status == "raised" else "cleared"
            out.append(
                Alert(
                    alert_id=aid,
                    type=kind,
                    status=status,
                    severity="critical" if kind == "device_fault" else "warning",
                    camera_id=m.camera_id,
                    signal=signal,
                    value=v,
                    threshold=threshold,
                    window=self.frames,
                    model_name=m.model_name,
                    model_version=m.model_version,
                    evidence_frame_ids=list(self.health.recent_frames),
                    raised_at=m.processed_at,
                    message=f"{kind.replace('_', ' ')} {verb} on camera {m.camera_id}: {text}",
                )
            )
        return out

    def _feed_value(self, fault: str) -> tuple[float, float, str]:
        f = self.feed
        if fault == "low_fps":
            return f.fps or 0.0, f.expected_fps * (1 - f.fps_tolerance), f"{f.fps or 0:.1f} frames/s"
        if fault == "no_frames":
            return 0.0, f.no_frames_s, "frames arrive again"
        if fault == "clock_skew":
            return f.skew or 0.0, f.skew_s, f"capture clock off by {f.skew or 0:.1f} s"
        return float(f.runs.get(fault, 0)), float(f.run_frames), f"{fault.replace('_', ' ')} frames in a row"

    def _upstream_value(self, signal: str) -> tuple[float, float, str]:
        u = self.upstream
        if signal == "frame_rate":
            return u.frame_rate or 0.0, u.reference_fps or 0.0, f"{u.frame_rate or 0:.1f} frames/s"
        if signal in ("resolution", "aspect_ratio"):
            w, h = u.ref_resolution or (0, 0)
            return (
                float(u.runs.get(signal, 0)),
                float(u.consecutive),
                f"{signal.replace('_', ' ')} changed from {w}x{h}",
            )
        return float(u.runs.get(signal, 0)), float(u.consecutive), f"{signal.replace('_', ' ')} changed"

    def _motion_value(self, signal: str) -> tuple[float, float, str]:
        last = self.moved.last
        shift = math.hypot(last.dx, last.dy)
        text = f"turned {last.angle_deg:.1f} degrees and shifted {shift:.0f} px against its reference view"
        return last.angle_deg, self.moved.threshold_deg, text

    def _distribution_value(self, signal: str) -> tuple[float, float, str]:
        w = self.distributions.windows[signal.removesuffix("_distribution")]
        text = (
            f"{signal.removesuffix('_distribution')} distribution of the last {w.window_size} frames differs from "
            f"the reference's {w.reference_size} (KS D={w.statistic:.2f}, p={w.p_value:.1e})"
        )
        return w.p_value, self.distributions.alpha, text

    def _prediction_value(self, signal: str) -> tuple[float, float, str]:
        if signal == "class_mix":
            c = self.classes
            text = (
                f"classes detected in the last {c.window_size} detections differ from the reference (p={c.p_value:.1e})"
            )
            return c.p_value, c.alpha, text
        c = self.confidence
        text = f"mean detection score {c.window_mean:.2f}, reference {c.reference_mean:.2f} (z={c.z_score:.1f})"
        return c.window_mean, c.reference_mean, text

    def _embedding_value(self, signal: str) -> tuple[float, float, str]:
        e = self.embedding
        if signal == "embedding_outlier":
            text = f"{e.consecutive} sampled frames in a row look unlike the reference (score {e.score:.2f})"
            return e.score, e.threshold, text
        w = e.scores
        text = f"embedding outlier scores shifted against the reference (KS D={w.statistic:.2f}, p={w.p_value:.1e})"
        return w.p_value, w.alpha, text

    def _concept_value(self, signal: str) -> tuple[float, float, str]:
        c = self.concept
        text = (
            f"the model's error on labelled frames rose to {c.recent_mean:.2f} (reference {c.reference_mean:.2f})"
            if c.drift_detected
            else f"the model's error on labelled frames is back to {c.recent_mean:.2f}"
        )
        return c.recent_mean, c.reference_mean + c.min_increase, text

    # -- state --------------------------------------------------------------------------------------------

    def essential(self) -> dict:
        """The part of the state that changes only on events (reference learned, alert raised or cleared)."""
        return {
            "health": self.health.events(),
            "active": dict(self.active),
            "faults": sorted(self.feed.faults),
            "upstream": sorted(self.upstream.drifted),
            "moved": self.moved.drift_detected if self.moved else False,
            "distributions": sorted(self.distributions.drifted) if self.distributions else [],
            "predictions": [self.classes.drift_detected, self.confidence.drift_detected] if self.classes else [],
            "embedding": [self.embedding.fitted, self.embedding.outlier, self.embedding.drift_detected]
            if self.embedding
            else [],
            "concept": self.concept.drift_detected if self.concept else False,
            "relearned_at": self.relearned_at,
            "policy": self.policy.to_dict(),
        }

    def to_dict(self) -> dict:
        return {
            "kind": "camera",
            "version": STATE_VERSION,
            "camera_id": self.camera_id,
            "health": self.health.to_dict(),
            "feed": self.feed.to_dict(),
            "upstream": self.upstream.to_dict(),
            "moved": self.moved.to_dict() if self.moved else None,
            "distributions": self.distributions.to_dict() if self.distributions else None,
            "classes": self.classes.to_dict() if self.classes else None,
            "confidence": self.confidence.to_dict() if self.confidence else None,
            "embedding": self.embedding.to_dict() if self.embedding else None,
            "concept": self.concept.to_dict() if self.concept else None,
            "active": dict(self.active),
            "frames": self.frames,
            "relearned_at": self.relearned_at,
            "policy": self.policy.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict, settings: MonitorSettings | None = None) -> CameraMonitor:
        """The monitor ``d`` describes. A state saved before a detector existed gets that detector new, as
        ``settings`` (the fleet's) configure it. Raises on a state it cannot read: see :func:`restore`."""
        d = version(d, "camera", STATE_VERSION)
        fresh = cls.drift_detectors(settings or MonitorSettings())
        parts = {
            name: kind.from_dict(d[name]) if d.get(name) else fresh.get(name)
            for name, kind in (
                ("distributions", MultiKS),
                ("classes", ClassDistributionDrift),
                ("confidence", ConfidenceDrift),
                ("embedding", EmbeddingDrift),
                ("concept", ConceptDrift),
            )
        }
        if not isinstance(d["camera_id"], str):
            raise StateError("camera_id: a string expected")
        return cls(
            **parts,
            camera_id=d["camera_id"],
            health=CameraHealth.from_dict(d["health"]),
            feed=FeedHealth.from_dict(d["feed"]),
            upstream=UpstreamDrift.from_dict(d["upstream"]),
            moved=CameraMoved.from_dict(d["moved"]) if d.get("moved") else None,
            active={str(k): str(v) for k, v in mapping(d["active"], "active").items()},
            frames=int(d["frames"]),
            relearned_at=float(d.get("relearned_at", 0.0)),
            # A state from before the policy: none of its alerts is held or a symptom; they resolve as sent.
            policy=AlertPolicy.from_dict(d["policy"])
            if d.get("policy")
            else AlertPolicy(holdoff_s=(settings or MonitorSettings()).alert_holdoff_s),
        )


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
