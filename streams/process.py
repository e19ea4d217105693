"""One batch of frames through the worker's steps: decode, detect, measure, judge. Pure of Kafka.

The faust agent in :mod:`streams.worker` hands raw messages in and sends what comes out; everything
here can be called and tested with plain bytes and a detector.

Models: each camera's frames go to its champion, and a share of them to its challenger in shadow, as the config
assigns them per fleet, site or camera (:mod:`core.assignment`; the worker's own detector when none is).
:meth:`FrameProcessor.route` groups a chunk's frames by champion, so that each model has its own batches; a
batch's frames that its cameras' challengers see are pre-processed into the challenger's own batch as well
(:class:`Shadow`), inferred beside the champion's, and give :class:`~core.contracts.ShadowPrediction` records
with their agreement with the champion's boxes (:mod:`models.agreement`): never predictions, metrics or alerts.
A model the config names is loaded once (:mod:`streams.modelpool`); one that fails to load leaves the champion
(or the worker's detector, for a champion) serving, and raises one ``model_fault`` alert.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from core.assignment import FLEET, SITE, Route, effective, named, sampled, scopes
from core.contracts import (
    Alert,
    CameraConfig,
    CameraInfo,
    CameraView,
    ClassAgreement,
    ContractError,
    DeadLetter,
    Detection,
    Evidence,
    Feedback,
    FrameMetrics,
    Prediction,
    ShadowPrediction,
    Timings,
    decode_record,
)
from core.fleetconfig import base_settings
from core.fleetconfig import effective as effective_settings
from core.inventory import Inventory
from core.monitoring import MonitorSettings
from core.settings import Settings
from models.agreement import agreement
from models.protocol import Model as Detector  # any model the registry loads: see models/protocol.py
from models.session import Inferred, timed
from streams.decode import DecodedFrame
from streams.frames import FrameBackend, frame_backend
from streams.modelpool import ModelPool, loader, ref_of, registry_check
from streams.monitor import image as image_signals
from streams.monitor.base import alert_id
from streams.monitor.camera import CameraMonitor, restore
from streams.monitor.concept import error_of, match
from streams.monitor.signals import ANALYSIS_WIDTH

log = logging.getLogger("cvops.worker")


@dataclass(frozen=True)
class RawMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None  # when the broker took the record, unix s


@dataclass
class PreparedFrame:
    """One decoded frame and what the decode threads measured of it."""

    decoded: DecodedFrame
    decode_ms: float
    arrived_at: float | None  # broker time, unix s
    signals: image_signals.ImageSignals | None  # all but the difference from the previous frame; None: not watched
    thumbnail: bytes | None = None  # JPEG, kept by the camera's monitor as evidence for alerts
    thumbnail_size: tuple[int, int] = (0, 0)  # width, height


@dataclass
class Shadow:
    """A challenger's own batch: the frames of a champion's batch (``picks``, their places in it) it sees."""

    model: Detector
    picks: list[int]
    batch: object
    inferring: Future | None = None  # of its Inferred, once started beside the champion's


@dataclass
class Prepared:
    """A batch decoded and pre-processed, ready for inference."""

    started: float  # unix s, when the batch's processing began
    frames: list[PreparedFrame] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    batch: object = None  # the detector's input tensor
    preprocess_ms: float = 0.0  # per frame
    model: Detector | None = None  # the champion the batch goes to; None: the worker's detector
    shadows: list[Shadow] = field(default_factory=list)  # its frames that challengers see, a batch per challenger


@dataclass
class BatchResult:
    predictions: list[Prediction] = field(default_factory=list)
    metrics: list[FrameMetrics] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)  # thumbnails proving the alerts raised
    views: list[CameraView] = field(default_factory=list)  # the cameras' latest and reference views
    # camera id -> CameraMonitor state, serialised only when read: the worker saves it every few frames,
    # and a full state (the reference view as PNG) costs about a millisecond to write out.
    states: Mapping[str, dict] = field(default_factory=dict)
    essential: dict[str, dict] = field(default_factory=dict)  # camera id -> the part that changes on events
    frames_seen: dict[str, int] = field(default_factory=dict)  # camera id -> frames its monitor has seen
    shadow_predictions: list[ShadowPrediction] = field(default_factory=list)  # challengers' detections


class _When(NamedTuple):
    """A batch's shared times: when it was judged (unix s) and its per-frame inference and post-processing."""

    processed_at: float
    inference_ms: float
    postprocess_ms: float


class FrameProcessor:
    """Runs a batch of frame messages through decode, detection, signals and the health rule."""

    def __init__(
        self,
        settings: Settings,
        detector: Detector,
        decode_threads: int = 2,
        embedder=None,
        frames: FrameBackend | None = None,
        load=None,
        check=None,
    ):
        self.settings = settings
        self.detector = detector  # the worker's own (CVOPS_MODEL): the champion where the config names none
        # Every model the config assigns, loaded once; ``load`` and ``check`` (tests) default to the registry's.
        self.pool = ModelPool(detector, load or loader(settings), check or registry_check(settings))
        self.inventory = Inventory()  # each camera's site, from the cameras topic (the worker follows it)
        self._faults: dict[str, Alert] = {}  # model ref -> the model_fault alert raised for it, until resolved
        self.embedder = embedder  # an ImageNet-style model with an embedding output, or None
        self._seen: dict[str, int] = {}  # camera id -> frames seen, to sample the ones to embed
        # camera id -> frame id -> (model name@version, its (label, box, score) per detection): what late labels
        # (the feedback topic) are scored against
        self._recent: dict[str, OrderedDict[str, tuple[str, list]]] = {}
        self.configs: dict[str, CameraConfig] = {}  # scope (fleet, site:<name>, camera id) -> its config record
        self._pool = ThreadPoolExecutor(decode_threads, thread_name_prefix="decode")
        self.need = decode_need(settings, detector.size, embedder.size if embedder is not None else None)
        self.frames = frames or frame_backend(settings, detector, self.need)
        self._monitors: dict[str, CameraMonitor] = {}
        self._restored: set[str] = set()  # cameras whose monitor was rebuilt from a state and has seen no frame since
        self.monitor_settings = base_settings(settings)

        if self.monitor_settings.embedding_reference:
            # The first camera's autoencoder fit would otherwise pay scikit-learn's import (seconds) on the
            # inference thread; import it now, beside start-up.
            threading.Thread(target=importlib.import_module, args=("sklearn.neural_network",), daemon=True).start()

    def close(self) -> None:
        self._pool.shutdown(wait=False)

    def _decode(
        self, msg: RawMessage, slot: np.ndarray | None = None, model: Detector | None = None
    ) -> tuple[PreparedFrame | None, Exception | None, float]:
        """Decode one message, measure its image, make its thumbnail and, given its ``slot`` in the batch,
        pre-process it there: all in a decode thread (OpenCV and numpy release the GIL). Returns the frame
        or the error, and the pre-process ms."""
        t0 = time.perf_counter()
        try:
            decoded = self.frames.decode(msg.value)
            key = msg.key.decode("utf-8", "replace") if msg.key is not None else None
            if key != decoded.header.camera_id:
                raise ContractError(
                    "key_mismatch", f"message key {key!r} is not the frame's camera_id {decoded.header.camera_id!r}"
                )
            check_capture_time(decoded.header.captured_at, msg.timestamp, time.time(), self.settings.max_clock_skew_s)
            frame = PreparedFrame(decoded, _ms(t0), msg.timestamp, None)
            if self.settings.monitoring:
                frame.signals = self.frames.measure(decoded)
                if self.settings.evidence_width:
                    frame.thumbnail, frame.thumbnail_size = self.frames.thumbnail(decoded, self.settings.evidence_width)
        except ContractError as exc:
            return None, exc, 0.0
        except Exception as exc:  # a decoder bug must not stop the stream either
            return None, ContractError("decode_failed", f"{type(exc).__name__}: {exc}"), 0.0
        if slot is None:
            return frame, None, 0.0
        t1 = time.perf_counter()
        try:
            self.frames.preprocess_into(decoded, slot, model)
        except Exception as exc:  # an image the model cannot take: this frame's dead letter, not the batch's
            return None, ContractError("preprocess_failed", f"{type(exc).__name__}: {exc}"), 0.0
        return frame, None, _ms(t1)

    def route(self, messages: Sequence[RawMessage]) -> list[tuple[Detector, list[RawMessage]]]:
        """``messages`` grouped by the champion of their camera (the message key), in order of first appearance:
        each group is cut into batches of its own (:meth:`prepare`)."""
        groups: dict[str, tuple[Detector, list[RawMessage]]] = {}
        for m in messages:
            camera = m.key.decode("utf-8", "replace") if m.key is not None else ""
            model = self.champion(camera)
            groups.setdefault(ref_of(model), (model, []))[1].append(m)
        return list(groups.values())

    def route_of(self, camera_id: str) -> Route:
        """The camera's models as its fleet's, site's and own config records assign them."""
        site = (self.inventory.cameras.get(camera_id) or {}).get("site")
        levels = [self.configs.get(scope) for scope in scopes(camera_id, site)]
        return effective(ref_of(self.detector), [c.models if c is not None else None for c in levels])

    def champion(self, camera_id: str) -> Detector:
        """The model the camera's frames go to: its champion, or the worker's detector while that one is not
        loaded (it failed: see :meth:`_model_faults`)."""
        return self.pool.get(self.route_of(camera_id).champion) or self.detector

    def prepare(self, messages: Sequence[RawMessage], model: Detector | None = None) -> Prepared:
        """Decode, measure and pre-process one batch for ``model`` (default: the worker's detector), frames in
        parallel; frames that fail become dead letters. Frames that their cameras' challengers see are
        pre-processed into each challenger's batch too (:attr:`Prepared.shadows`).

        The detector's input batch (``new_batch(n)``) is filled by the decode threads, each frame into its
        own slot (``preprocess_into(image, slot)``).
        """
        started = time.time()
        det = model or self.detector
        prepared = Prepared(started=started, model=det)
        batch = det.new_batch(len(messages))
        slots = list(batch)
        kept, pre_ms = [], 0.0

        def decode(msg: RawMessage, slot: np.ndarray):
            return self._decode(msg, slot, det)

        for i, (msg, (frame, err, ms)) in enumerate(
            zip(messages, self._pool.map(decode, messages, slots), strict=True)
        ):
            if frame is None:
                prepared.dead_letters.append(
                    DeadLetter.of(msg.topic, msg.partition, msg.offset, msg.key, msg.value, err)
                )
            else:
                prepared.frames.append(frame)
                kept.append(i)
                pre_ms += ms
        if not prepared.frames:
            return prepared
        prepared.batch = batch if len(kept) == len(messages) else batch[kept]
        prepared.preprocess_ms = pre_ms / len(kept)
        prepared.shadows = self._shadows(prepared)
        return prepared

    def _shadows(self, prepared: Prepared) -> list[Shadow]:
        """The batch's frames each challenger sees (:func:`core.assignment.sampled`), pre-processed into a batch
        of that challenger's. A challenger not loaded (it failed) sees none; a frame it cannot take is left out."""
        picks: dict[str, list[int]] = {}
        for k, frame in enumerate(prepared.frames):
            h = frame.decoded.header
            r = self.route_of(h.camera_id)
            if r.shadowed and sampled(h.frame_id, r.share):
                picks.setdefault(r.challenger, []).append(k)
        out = []
        for ref, ks in picks.items():
            model = self.pool.get(ref)
            if model is None or model is prepared.model:
                continue
            batch = model.new_batch(len(ks))

            def fill(i: int, model=model, batch=batch, ks=ks) -> bool:
                try:
                    self.frames.preprocess_into(prepared.frames[ks[i]].decoded, batch[i], model)
                    return True
                except Exception:
                    return False

            ok = list(self._pool.map(fill, range(len(ks))))
            kept = [i for i, good in enumerate(ok) if good]
            if kept:
                out.append(Shadow(model, [ks[i] for i in kept], batch if len(kept) == len(ks) else batch[kept]))
        return out

    def _postprocess(self, raw: object, sizes: list[tuple[int, int]], model: Detector | None = None) -> list[list]:
        """The detector's post-processing, one frame per decode thread when its outputs are batch-first
        arrays (as NanoDet's are): on a GPU it would otherwise be the slowest step of a batch."""
        det = model or self.detector
        n = len(sizes)
        split = (
            n > 1
            and isinstance(raw, list | tuple)
            and all(isinstance(o, np.ndarray) and o.shape[:1] == (n,) for o in raw)
        )
        if not split:
            return det.postprocess(raw, sizes)

        def one(k: int) -> list:
            return det.postprocess([o[k : k + 1] for o in raw], [sizes[k]])[0]

        return list(self._pool.map(one, range(n)))

    def start_inference(self, prepared: Prepared) -> Future | None:
        """Begin inferring a prepared batch without waiting: a future of :class:`models.session.Inferred`
        for :meth:`finish`. On CPU lanes the detector queues it behind the batch before, so the next batch
        can start before this one ends. None when no frame is left to infer."""
        if not prepared.frames:
            return None
        started = (prepared.model or self.detector).submit(prepared.batch)
        for shadow in prepared.shadows:  # on the challengers' own sessions, beside the champion's
            shadow.inferring = shadow.model.submit(shadow.batch)
        return started

    def finish(
        self, prepared: Prepared, states: Mapping[str, dict | None], inferred: Inferred | None = None
    ) -> BatchResult:
        """Infer (unless ``inferred`` is the result of :meth:`start_inference`), post-process, measure and
        judge a prepared batch. ``states`` holds the saved monitor state of its cameras; the new ones are
        in the result's ``states``."""
        out = BatchResult(dead_letters=list(prepared.dead_letters))
        if not prepared.frames:
            return out
        det = prepared.model or self.detector
        if inferred is None:
            inferred = timed(det.infer, prepared.batch)
        t2 = time.perf_counter()
        found = self._postprocess(inferred.outputs, [f.decoded.size for f in prepared.frames], det)
        t3 = time.perf_counter()
        n = len(prepared.frames)
        when = _When(time.time(), inferred.seconds * 1e3 / n, (t3 - t2) * 1e3 / n)
        embeddings = self._embed(prepared) if self.settings.monitoring else {}
        monitors: dict[str, CameraMonitor] = {}
        cameras: set[str] = set()
        for k, (frame, dets) in enumerate(zip(prepared.frames, found, strict=True)):
            h = frame.decoded.header
            detections = [
                Detection(label=d.label, class_id=d.class_id, score=round(float(d.score), 4), box=d.box) for d in dets
            ]
            self._remember(h.camera_id, h.frame_id, detections, ref_of(det))
            out.predictions.append(self._prediction(prepared, frame, detections, n, when))
            if h.camera_id not in cameras:
                cameras.add(h.camera_id)
                out.alerts += self._model_faults(h.camera_id, det, when.processed_at)
            if not self.settings.monitoring:
                continue
            if h.camera_id not in monitors:
                monitors[h.camera_id] = self._monitor(h.camera_id, states.get(h.camera_id), out.alerts)
            self._judge(monitors, frame, detections, embeddings.get(k), when, out, det)
        out.shadow_predictions = self._shadow_predictions(prepared, out.predictions)
        out.states = _States(monitors)
        out.frames_seen = {cam: mon.frames for cam, mon in monitors.items()}
        out.essential = {cam: mon.essential() for cam, mon in monitors.items()}
        return out

    def _prediction(
        self, prepared: Prepared, frame: PreparedFrame, detections: list[Detection], n: int, when: _When
    ) -> Prediction:
        h, det = frame.decoded.header, prepared.model or self.detector
        return Prediction(
            frame_id=h.frame_id, camera_id=h.camera_id, seq=h.seq, captured_at=h.captured_at,
            processed_at=when.processed_at, model_name=det.name, model_version=det.version, width=h.width,
            height=h.height, batch_size=n, detections=detections,
            timings=Timings(
                queue_ms=max(0.0, (prepared.started - h.captured_at) * 1e3), decode_ms=frame.decode_ms,
                preprocess_ms=prepared.preprocess_ms, inference_ms=when.inference_ms,
                postprocess_ms=when.postprocess_ms,
            ),
        )  # fmt: skip

    def _metrics(
        self, frame: PreparedFrame, s, detections: list[Detection], embedding, when: _When, det: Detector
    ) -> FrameMetrics:
        h = frame.decoded.header
        return FrameMetrics(
            frame_id=h.frame_id, camera_id=h.camera_id, seq=h.seq, captured_at=h.captured_at,
            processed_at=when.processed_at, model_name=det.name, model_version=det.version, encoding=h.encoding,
            bytes=len(frame.decoded.frame.image), width=s.width, height=s.height, aspect_ratio=s.aspect_ratio,
            brightness=s.brightness, blur=s.blur, inference_ms=when.inference_ms, detections=len(detections),
            contrast=s.contrast, saturation=s.saturation, under_exposed=s.under_exposed,
            over_exposed=s.over_exposed, frame_diff=s.frame_diff, black=s.black,
            mean_confidence=sum(d.score for d in detections) / len(detections) if detections else 0.0,
            embedding=embedding,
            embedding_model=f"{self.embedder.name}@{self.embedder.version}" if embedding is not None else "",
        )  # fmt: skip

    def _judge(
        self,
        monitors: dict[str, CameraMonitor],
        frame: PreparedFrame,
        detections: list[Detection],
        embedding,
        when: _When,
        out: BatchResult,
        det: Detector,
    ) -> None:
        """Measure one frame, let its camera's monitor judge it, and add what comes of it to ``out``."""
        h = frame.decoded.header
        monitor = monitors[h.camera_id]
        s = image_signals.with_previous(frame.signals, monitor.previous_small)
        m = self._metrics(frame, s, detections, embedding, when, det)
        # Frames that go to another model than before: the references that are the model's output start over.
        out.alerts += monitor.switch_model(ref_of(det), self.settings_for(h.camera_id), when.processed_at,
                                           self._model_names(monitor))  # fmt: skip
        out.metrics.append(m)
        if frame.thumbnail is not None:
            monitor.keep_thumbnail(
                h.frame_id, h.captured_at, frame.thumbnail, frame.thumbnail_size, (h.width, h.height)
            )
        observe = dict(
            arrived_at=frame.arrived_at or when.processed_at,
            cooldown_s=self.settings.rule_cooldown_s,
            frame_diff=s.frame_diff,
            black=s.black,
            over_exposed=s.over_exposed,
            labels=[d.label for d in detections],
            scores=[d.score for d in detections],
        )
        try:
            raised = monitor.observe(m, s.small, **observe)
        except Exception as exc:
            if h.camera_id not in self._restored:
                raise
            # A saved state that read back but cannot be used: the camera starts over, as for one unread.
            log.warning(
                "camera %s: its saved state fails on the first frame (%s: %s); its references are learned again",
                h.camera_id, type(exc).__name__, str(exc)[:300],
            )  # fmt: skip
            monitor = monitors[h.camera_id] = self._monitors[h.camera_id] = CameraMonitor.new(
                h.camera_id, self.settings_for(h.camera_id)
            )
            raised = monitor.observe(m, s.small, **observe)
        self._restored.discard(h.camera_id)
        out.alerts += raised
        sampled = monitor.sample(m, self.settings.monitor_stats_every_s)
        if sampled:
            out.metrics[-1] = m = m.model_copy(update=sampled)
        out.evidence += [e for a in raised if a.status == "raised" for e in monitor.evidence(a)]
        if frame.thumbnail is not None:
            out.views += monitor.views(self.settings.view_every_s)
        if frame.thumbnail is not None and self.settings.edge_cases_per_hour:
            edge = self._edge_case(monitor, m)
            if edge is not None:
                out.evidence.append(edge)

    def _edge_case(self, monitor: CameraMonitor, m: FrameMetrics) -> Evidence | None:
        """This frame as an edge case, if it is one: an embedding its camera's autoencoder finds outlying, or
        detections whose mean score is below ``edge_case_confidence`` (the model unsure what it sees)."""
        e = monitor.embedding
        if m.embedding and e is not None and e.fitted and e.score > e.threshold:
            reason, score = "outlier", e.score
        elif m.detections and m.mean_confidence < self.settings.edge_case_confidence:
            reason, score = "low_confidence", m.mean_confidence
        else:
            return None
        return monitor.edge_case(m.frame_id, m.captured_at, reason, score, self.settings.edge_cases_per_hour)

    def process(self, messages: Sequence[RawMessage], states: Mapping[str, dict | None]) -> BatchResult:
        """Both steps at once, for one batch."""
        return self.finish(self.prepare(messages), states)

    def _embed(self, prepared: Prepared) -> dict[int, list[float]]:
        """Embeddings of one frame in ``embedding_every`` of each camera (index in the batch -> vector).

        A second, small model on sampled frames rather than the detector's own features: it costs about a
        tenth of the detector per embedded frame and describes the whole scene (``./dev bench embedding``)."""
        if self.embedder is None:
            return {}
        picked = []
        for k, frame in enumerate(prepared.frames):
            cam = frame.decoded.header.camera_id
            n = self._seen.get(cam, 0)
            self._seen[cam] = n + 1
            if n % self.settings.embedding_every == 0:
                picked.append(k)
        if not picked:
            return {}
        images = [self.frames.host_image(prepared.frames[k].decoded) for k in picked]
        outputs = self.embedder.postprocess(self.embedder.infer(self.embedder.preprocess(images)))
        return {k: [round(float(x), 5) for x in c.embedding] for k, c in zip(picked, outputs, strict=True)}

    @property
    def cameras(self) -> list[str]:
        """The cameras this processor holds a live monitor for."""
        return list(self._monitors)

    def _levels(self, camera_id: str) -> list[CameraConfig]:
        """The config records a camera's settings come from, least specific first: fleet, site, camera."""
        site = (self.inventory.cameras.get(camera_id) or {}).get("site")
        return [c for scope in scopes(camera_id, site) if (c := self.configs.get(scope)) is not None]

    def settings_for(self, camera_id: str) -> MonitorSettings:
        """The camera's monitor settings: the worker's, then the fleet's overrides, its site's, its own."""
        return effective_settings(self.monitor_settings, *(c.overrides for c in self._levels(camera_id)))

    def _relearn_after(self, camera_id: str) -> float:
        return max((c.relearn_after or 0.0 for c in self._levels(camera_id)), default=0.0)

    def _model_names(self, monitor: CameraMonitor) -> tuple[str, str]:
        """The (name, version) of the model the camera's frames went to last (the worker's detector if unknown)."""
        name, _, version = monitor.model.partition("@")
        return (name, version) if name and version else (self.detector.name, self.detector.version)

    def _model_faults(self, camera_id: str, det: Detector, now: float) -> list[Alert]:
        """One ``model_fault`` alert per model the camera should run and this worker could not load (raised
        once, on the first camera that needs it; resolved when no config names the model any more, or it loads)."""
        route, out = self.route_of(camera_id), []
        wanted = [("champion", route.champion)] + ([("challenger", route.challenger)] if route.shadowed else [])
        for role, ref in wanted:
            if ref in self._faults or self.pool.get(ref) is not None:
                continue
            why = self.pool.why(ref)
            serving = f"{det.name}@{det.version}"
            alone = " alone" if role == "challenger" else " as the champion"
            text = f"model fault on camera {camera_id}: the {role} {ref} could not be loaded ({why}); {serving} "
            alert = Alert(
                alert_id=alert_id(camera_id, f"model_fault/{role}", ref), type="model_fault",
                severity="critical" if role == "champion" else "warning", camera_id=camera_id,
                signal=f"{role}_load", value=1.0, threshold=0.0, window=0, model_name=det.name,
                model_version=det.version, raised_at=now, message=f"{text}goes on serving{alone}",
            )  # fmt: skip
            self._faults[ref] = alert
            out.append(alert)
        return out

    def _settle_faults(self, now: float) -> list[Alert]:
        """Resolves of the model faults whose model loads now, or that no config record names any more."""
        named_now = {r for c in self.configs.values() for r in named(c.models)}
        out = []
        for ref, raised in list(self._faults.items()):
            if self.pool.get(ref) is None and ref in named_now:
                continue
            del self._faults[ref]
            why = "it is loaded now" if self.pool.get(ref) is not None else "no config names it any more"
            out.append(raised.model_copy(update={"status": "resolved", "raised_at": now, "message": f"model fault "
                       f"cleared on camera {raised.camera_id}: {ref}: {why}"}))  # fmt: skip
        return out

    def _shadow_predictions(self, prepared: Prepared, predictions: list[Prediction]) -> list[ShadowPrediction]:
        """Each challenger's detections on the frames it saw in shadow, beside the champion's prediction of the
        same frame (``predictions``, in the batch's frame order), with their agreement per class. A challenger
        that fails on a batch gives nothing for it; the champion's outputs stand."""
        out = []
        for shadow in prepared.shadows:
            model = shadow.model
            try:
                inferring = shadow.inferring
                inferred = inferring.result() if inferring is not None else timed(model.infer, shadow.batch)
                sizes = [prepared.frames[k].decoded.size for k in shadow.picks]
                found = model.postprocess(inferred.outputs, sizes)
            except Exception as exc:
                log.warning("challenger %s failed on a batch of %d frames (%s: %s); its shadow predictions are "
                            "left out", ref_of(model), len(shadow.picks), type(exc).__name__, exc)  # fmt: skip
                continue
            n = len(shadow.picks)
            for k, dets in zip(shadow.picks, found, strict=True):
                champion = predictions[k]
                mine = [Detection(label=d.label, class_id=d.class_id, score=round(float(d.score), 4), box=d.box)
                        for d in dets]  # fmt: skip
                timings = champion.timings.model_copy(update={"inference_ms": inferred.seconds * 1e3 / n})
                out.append(ShadowPrediction(
                    **champion.model_dump(exclude={"model_name", "model_version", "batch_size", "detections",
                                                   "timings"}),
                    model_name=model.name, model_version=model.version, batch_size=n, detections=mine,
                    timings=timings, champion_name=champion.model_name, champion_version=champion.model_version,
                    agreement=class_agreement(champion.detections, mine),
                ))  # fmt: skip
        return out

    def _monitor(self, camera_id: str, state: dict | None, pending: list[Alert] | None = None) -> CameraMonitor:
        """The camera's live monitor (it keeps what is not persisted: the previous frame, evidence ids),
        else one rebuilt from the saved state (after a restart or when the camera moved here), else new (also
        when the state cannot be read: :func:`streams.monitor.camera.restore` logs it).
        An operator's relearn request newer than the monitor starts it over; the alerts that resolves go
        to ``pending``."""
        live = self._monitors.get(camera_id)
        if live is not None:
            return live
        monitor, restored = restore(camera_id, state, self.settings_for(camera_id))
        if restored:
            self._restored.add(camera_id)
        if self._relearn_after(camera_id) > monitor.relearned_at:
            monitor, resolved = self._relearn(monitor)
            if pending is not None:
                pending += resolved
        self._monitors[camera_id] = monitor
        return monitor

    def _relearn(self, monitor: CameraMonitor) -> tuple[CameraMonitor, list[Alert]]:
        cam = monitor.camera_id
        why = "its references are being learned again"
        resolved = monitor.resolve_all(time.time(), *self._model_names(monitor), why)
        fresh = CameraMonitor.new(cam, self.settings_for(cam))
        fresh.relearned_at = self._relearn_after(cam)
        fresh.model = monitor.model
        fresh.frames, fresh.thumbnails = monitor.frames, monitor.thumbnails
        return fresh, resolved

    def check(self, config: CameraConfig | None) -> None:
        """:class:`ContractError` (``unknown_model``, ``not_a_detector``) for a config record naming a model that
        this worker's registry does not have as a detector: the record is refused whole (dead-lettered)."""
        for ref in named(config.models if config is not None else None):
            self.pool.check(ref)

    def configure(self, scope: str, config: CameraConfig | None) -> BatchResult:
        """Take a config record (``None``: its scope's overrides removed) and apply it to the live cameras
        it covers: thresholds at once, a relearn request by starting their monitors over, the models it names
        loaded (a model that failed before is tried again). A record naming a model the registry does not
        have is refused whole (:meth:`check`: ContractError), before anything changes."""
        self.check(config)
        for ref in named(config.models if config is not None else None):  # loaded before frames are sent there
            if (model := self.pool.ensure(ref, retry=True)) is not None:
                self._fit_decode(model)
        if config is None:
            self.configs.pop(scope, None)
        else:
            self.configs[scope] = config
        out = BatchResult(alerts=self._settle_faults(time.time()))
        if scope == FLEET:
            cameras = list(self._monitors)
        elif scope.startswith(SITE):
            site = scope.removeprefix(SITE)
            cameras = [c for c in self._monitors if (self.inventory.cameras.get(c) or {}).get("site") == site]
        else:
            cameras = [scope] if scope in self._monitors else []
        for cam in cameras:
            monitor = self._monitors[cam]
            monitor.apply(self.settings_for(cam))
            if self._relearn_after(cam) > monitor.relearned_at:
                self._monitors[cam], resolved = self._relearn(monitor)
                out.alerts += resolved
        monitors = {cam: self._monitors[cam] for cam in cameras}
        out.states = _States(monitors)
        out.frames_seen = {cam: mon.frames for cam, mon in monitors.items()}
        out.essential = {cam: mon.essential() for cam, mon in monitors.items()}
        return out

    def inventory_record(self, record) -> None:
        """A record of the ``cameras`` topic (the inventory, keyed ``<source>:<camera id>``): the cameras' sites,
        for the settings and models assigned per site. ContractError for one that is not a CameraInfo."""
        key = (record.key or b"").decode("utf-8", "replace")
        info = decode_record(CameraInfo, record.value) if record.value is not None else None
        if info is not None and key != f"{info.source}:{info.camera_id}":
            raise ContractError("key_mismatch", f"the record of {info.source}:{info.camera_id} is keyed {key!r}")
        self.inventory.apply(key, info)

    def _fit_decode(self, model: Detector) -> None:
        """Frames are decoded reduced to what the worker's models need (:func:`decode_need`): a model with a
        larger input than that makes them decoded larger from now on."""
        if self.need == (0, 0):
            return
        width, height = model.size
        if width > self.need[0] or height > self.need[1]:
            self.need = (max(width, self.need[0]), max(height, self.need[1]))
            if hasattr(self.frames, "need"):
                self.frames.need = self.need

    def forget(self) -> None:
        """Drop the live monitors (after a rebalance the saved states are the truth) and the predictions kept
        for late labels (a camera that moved away is scored by its new worker)."""
        self._monitors.clear()
        self._restored.clear()
        self._recent.clear()

    def _remember(self, camera_id: str, frame_id: str, detections: Sequence[Detection], model: str) -> None:
        recent = self._recent.setdefault(camera_id, OrderedDict())
        recent[frame_id] = (model, [(d.label, d.box, d.score) for d in detections])
        while len(recent) > self.settings.feedback_horizon:
            recent.popitem(last=False)

    def feedback(self, messages: Sequence[RawMessage], states: Mapping[str, dict | None]) -> BatchResult:
        """Score labelled frames (feedback-topic messages) against the predictions this worker made for them
        and feed each camera's concept-drift detector. A label for a frame this worker no longer holds (older
        than ``feedback_horizon`` frames of its camera, or predicted before a restart or a rebalance) is a
        dead letter with reason ``unknown_frame``, as is any message that breaks the contract; one that fails in
        a way nobody foresaw is a dead letter with reason ``processing_failed``, and the others go on."""
        out = BatchResult()
        monitors: dict[str, CameraMonitor] = {}
        for msg in messages:
            try:
                fb = decode_record(Feedback, msg.value)
                key = msg.key.decode("utf-8", "replace") if msg.key is not None else None
                if key != fb.camera_id:
                    raise ContractError("key_mismatch", f"message key {key!r} is not the camera_id {fb.camera_id!r}")
                model, predicted = self._recent.get(fb.camera_id, {}).get(fb.frame_id, ("", None))
                if predicted is None:
                    raise ContractError(
                        "unknown_frame",
                        f"frame {fb.frame_id!r} is not among the last {self.settings.feedback_horizon} predictions "
                        f"this worker made for camera {fb.camera_id!r} (too late, or predicted before a restart)",
                    )
                monitor = monitors.get(fb.camera_id)
                if monitor is None:
                    monitor = monitors[fb.camera_id] = self._monitor(fb.camera_id, states.get(fb.camera_id), out.alerts)
                hits = match([(label, box) for label, box, _ in predicted], [(o.label, o.box) for o in fb.objects])
                scores = [score for _, _, score in predicted]
                out.alerts += monitor.observe_feedback(
                    fb.frame_id, error_of(hits, len(fb.objects)), time.time(), *self._model_names(monitor),
                    scores=scores, hits=hits, truths=len(fb.objects), predicted_by=model,
                )  # fmt: skip
            except Exception as exc:
                err = exc if isinstance(exc, ContractError) else processing_failed(exc)
                out.dead_letters.append(DeadLetter.of(msg.topic, msg.partition, msg.offset, msg.key, msg.value, err))
        out.states = _States(monitors)
        out.frames_seen = {cam: mon.frames for cam, mon in monitors.items()}
        out.essential = {cam: mon.essential() for cam, mon in monitors.items()}
        return out

    def check_silence(self, now: float) -> list[Alert]:
        """Silence alerts of the cameras this worker watches (the worker's timer calls it)."""
        out = []
        for monitor in list(self._monitors.values()):
            out += monitor.check_silence(now, *self._model_names(monitor))
        return out


class _States(Mapping):
    """Camera id -> monitor state, each written out when it is read."""

    def __init__(self, monitors: dict[str, CameraMonitor]):
        self._monitors = monitors

    def __getitem__(self, camera_id: str) -> dict:
        return self._monitors[camera_id].to_dict()

    def __iter__(self):
        return iter(self._monitors)

    def __len__(self) -> int:
        return len(self._monitors)


def class_agreement(champion: Sequence[Detection], challenger: Sequence[Detection]) -> list[ClassAgreement]:
    """Per class seen by either model on one frame: the challenger's boxes matched one to one with the champion's
    at IoU 0.5 (:func:`models.agreement.agreement`), and each model's scores summed.

    >>> person = Detection(label="person", class_id=0, score=0.8, box=(0, 0, 10, 20))
    >>> [(a.label, a.champion, a.challenger, a.matched) for a in class_agreement([person], [person, person])]
    [('person', 1, 2, 1)]
    """
    scores: dict[tuple[str, str], float] = {}
    for role, dets in (("champion", champion), ("challenger", challenger)):
        for d in dets:
            scores[role, d.label] = scores.get((role, d.label), 0.0) + d.score
    return [
        ClassAgreement(label=label, champion=a.reference, challenger=a.candidate, matched=a.matched,
                       score_delta_sum=a.score_delta_sum, champion_score_sum=scores.get(("champion", label), 0.0),
                       challenger_score_sum=scores.get(("challenger", label), 0.0))
        for label, a in agreement(champion, challenger).items()
    ]  # fmt: skip


def processing_failed(exc: Exception) -> ContractError:
    """An unforeseen exception met while processing one message, as that message's dead-letter reason."""
    return ContractError("processing_failed", f"{type(exc).__name__}: {str(exc)[:500]}")


def check_capture_time(captured_at: float, arrived_at: float | None, now: float, max_skew_s: float) -> None:
    """:class:`ContractError` ``capture_time_out_of_range`` for a frame captured more than ``max_skew_s``
    from its broker record's time (``arrived_at``, when known), or after ``now`` (the worker's clock) by more
    than that. Such a time is no camera's clock, even a wrong one: kept, it would set the camera's clocks
    (views, statistics, frame rate) ahead. A skew within the bound is the camera's to report (``clock_skew``).

    >>> check_capture_time(1_000.0, 1_002.5, now=1_010.0, max_skew_s=86_400)  # 2.5 s off: a device fault, if any
    >>> check_capture_time(1_000.0, 200_000.0, now=200_000.0, max_skew_s=86_400)
    Traceback (most recent call last):
    ...
    core.contracts.ContractError: capture_time_out_of_range: captured 199000 s before its record's time ...
    """
    if arrived_at is not None and abs(arrived_at - captured_at) > max_skew_s:
        way = "before" if captured_at < arrived_at else "after"
        raise ContractError(
            "capture_time_out_of_range",
            f"captured {abs(arrived_at - captured_at):.0f} s {way} its record's time (at most {max_skew_s:.0f})",
        )
    if captured_at - now > max_skew_s:
        raise ContractError(
            "capture_time_out_of_range",
            f"captured {captured_at - now:.0f} s ahead of this worker's clock (at most {max_skew_s:.0f})",
        )


def decode_need(
    settings: Settings, model_size: tuple[int, int], embedder_size: tuple[int, int] | None
) -> tuple[int, int]:
    """The fewest pixels (width, height) a frame may be decoded to (:func:`streams.decode.jpeg_scale`): the
    detector's input, and with monitoring on the thumbnails, the embedder's input and twice the image
    signals' analysis width. Twice, so that the analysis copy is still averaged from two pixels or more each
    way and the signals stay comparable with a full decode's (blur within 1% on real footage: docs/scaling.md).
    (0, 0), no reduction, when ``decode_reduced`` is off.

    >>> s = Settings(_env_file=None)
    >>> unwatched = s.model_copy(update={"monitoring": False})
    >>> decode_need(s, (416, 416), (224, 224)), decode_need(unwatched, (416, 416), None)
    ((640, 416), (416, 416))
    """
    if not settings.decode_reduced:
        return 0, 0
    widths, heights = [model_size[0]], [model_size[1]]
    if settings.monitoring:
        widths += [2 * ANALYSIS_WIDTH, settings.evidence_width]
        if embedder_size is not None:
            widths.append(embedder_size[0])
            heights.append(embedder_size[1])
    return max(widths), max(heights)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3


def silence_clock(wall: float, newest_arrival: float, since_last_batch_s: float, no_frames_s: float) -> float:
    """The time against which a worker judges its cameras' silence (unix s, the broker's clock of arrival).

    While the worker works through a backlog, that is the arrival time of the newest frame it has reached,
    not the wall clock: a camera is silent when the other cameras' frames of that time have come and its own
    have not, however far behind the worker is. Once the worker is idle (no batch taken or finished for 2 s:
    it has caught up) or close behind, the wall clock decides, so that a whole gateway going quiet is seen too.
    ``since_last_batch_s`` is 0 while a batch is being processed.

    >>> silence_clock(wall=1000.0, newest_arrival=965.0, since_last_batch_s=0.1, no_frames_s=10)  # 35 s behind
    965.0
    >>> silence_clock(wall=1000.0, newest_arrival=965.0, since_last_batch_s=30.0, no_frames_s=10)  # idle
    1000.0
    >>> silence_clock(wall=1000.0, newest_arrival=999.5, since_last_batch_s=0.1, no_frames_s=10)  # keeping up
    1000.0
    """
    behind = since_last_batch_s < 2.0 and wall - newest_arrival > no_frames_s / 2
    return newest_arrival if behind else wall
