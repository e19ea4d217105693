"""Message contracts, one per topic, defined once and versioned.

+--------------+---------------+----------------------------------------------------------+
| topic        | key           | value                                                    |
+==============+===============+==========================================================+
| frames       | camera id     | :class:`FrameHeader` + encoded image, see :func:`pack_frame` |
| predictions  | camera id     | :class:`Prediction` (JSON)                               |
| metrics      | camera id     | :class:`FrameMetrics` (JSON)                             |
| alerts       | camera id     | :class:`Alert` (JSON)                                    |
| evidence     | camera id     | :class:`Evidence` (JSON)                                 |
| views        | camera id     | :class:`CameraView` (JSON)                               |
| deadletters  | source key    | :class:`DeadLetter` (JSON)                               |
| shadow-predictions | camera id | :class:`ShadowPrediction` (JSON)                         |
| model-changes | scope        | :class:`ModelChange` (JSON)                              |
| workers      | worker id     | :class:`WorkerStatus` (JSON)                             |
+--------------+---------------+----------------------------------------------------------+

Every record carries ``schema_version``. A reader rejects a version it does not know with a
:class:`ContractError` (a clear reason that ends up in the dead-letter topic), never guesses.

A frame is binary so that the image travels without base64: ``b"CVF1"``, a 4-byte big-endian header
length, the header as UTF-8 JSON, then the encoded image bytes. Any language can read it.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from core.monitoring import override_fields

FRAME_MAGIC = b"CVF1"
FRAME_SCHEMA_VERSION = 1
RECORD_SCHEMA_VERSION = 1
_HEADER_LEN = struct.Struct(">I")
_MAX_HEADER_BYTES = 64 * 1024
MAX_SEQ = 2**63 - 1  # a frame's seq fits a signed 64-bit column (the store's is UInt64)
MAX_CAPTURED_AT = 4_102_444_800.0  # 2100-01-01T00:00:00Z: a capture time beyond is no clock's

Encoding = Literal["jpeg", "png", "webp"]
AlertType = Literal[
    "data_drift",
    "embedding_drift",
    "prediction_drift",
    "upstream_drift",
    "domain_drift",
    "concept_drift",
    "device_fault",
    "outlier",
    "model_fault",
]


class ContractError(ValueError):
    """A message that breaks its topic's contract. ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FrameHeader(_Record):
    """Metadata of one captured frame, written by a gateway."""

    schema_version: Literal[1] = FRAME_SCHEMA_VERSION
    frame_id: str = Field(min_length=1, max_length=200, description="unique id: camera:session:seq")
    camera_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    seq: int = Field(ge=0, le=MAX_SEQ, description="frame number within the gateway session (a signed 64-bit column)")
    captured_at: float = Field(
        gt=0,
        lt=MAX_CAPTURED_AT,
        allow_inf_nan=False,
        description="capture time, unix seconds, before 2100; within CVOPS_MAX_CLOCK_SKEW_S of the record's time",
    )
    encoding: Encoding = "jpeg"
    width: int = Field(gt=0, le=100_000, description="px as displayed (after any EXIF orientation), as claimed")
    height: int = Field(gt=0, le=100_000, description="px as displayed (after any EXIF orientation), as claimed")


class Frame(_Record):
    header: FrameHeader
    image: bytes


def pack_frame(header: FrameHeader, image: bytes) -> bytes:
    head = header.model_dump_json().encode()
    return FRAME_MAGIC + _HEADER_LEN.pack(len(head)) + head + image


def unpack_frame(value: bytes | None) -> Frame:
    """Parse a frames-topic value; raise :class:`ContractError` with the reason when it is not one."""
    if not value:
        raise ContractError("empty_message", "the message has no value")
    if value[:4] != FRAME_MAGIC:
        raise ContractError("bad_magic", f"expected {FRAME_MAGIC!r} at the start, got {bytes(value[:4])!r}")
    if len(value) < 8:
        raise ContractError("truncated", "message ends inside the header length")
    (n,) = _HEADER_LEN.unpack_from(value, 4)
    if n > _MAX_HEADER_BYTES or 8 + n > len(value):
        raise ContractError("truncated", f"header claims {n} bytes, message has {len(value) - 8}")
    raw = _load_json(bytes(value[8 : 8 + n]), "bad_header")
    if not isinstance(raw, dict):
        raise ContractError("bad_header", "header is not a JSON object")
    version = raw.get("schema_version")
    if version != FRAME_SCHEMA_VERSION:
        raise ContractError("unknown_schema_version", f"frame schema_version {version!r} is not supported")
    try:
        header = FrameHeader.model_validate(raw)
    except ValidationError as exc:
        raise ContractError("bad_header", _short(exc)) from None
    image = bytes(value[8 + n :])
    if not image:
        raise ContractError("empty_image", "the frame carries no image bytes")
    return Frame(header=header, image=image)


class Detection(_Record):
    label: str = Field(description="the class's name in the model's label list")
    class_id: int = Field(ge=0, description="its index in that list")
    score: float = Field(ge=0, le=1, description="the model's confidence, 0-1")
    box: tuple[float, float, float, float] = Field(description="x1, y1, x2, y2 in source pixels")


class Timings(_Record):
    """Where a frame's time went, ms. ``inference_ms`` is this frame's share of its batch."""

    queue_ms: float = Field(ge=0, description="capture to start of processing")
    decode_ms: float = Field(ge=0, description="image bytes to pixels")
    preprocess_ms: float = Field(ge=0, description="pixels to the model's input tensor")
    inference_ms: float = Field(ge=0, description="this frame's share of its batch's inference")
    postprocess_ms: float = Field(ge=0, description="outputs to detections (and non-maximum suppression)")


class Prediction(_Record):
    schema_version: Literal[1] = RECORD_SCHEMA_VERSION
    frame_id: str
    camera_id: str
    seq: int
    captured_at: float = Field(description="unix seconds")
    processed_at: float = Field(description="unix seconds")
    model_name: str = Field(description="the registry's name of the model that saw the frame")
    model_version: str
    width: int = Field(description="the decoded frame's px")
    height: int = Field(description="the decoded frame's px")
    batch_size: int = Field(ge=1, description="frames in the inference batch this one was part of")
    detections: list[Detection] = Field(description="above the model's score threshold, after NMS")
    timings: Timings


class ClassAgreement(_Record):
    """One class on one frame: the champion's and the challenger's boxes, how many match one to one at IoU 0.5
    (:mod:`models.agreement`), the challenger's score minus the champion's summed over the matches, and each
    model's scores summed. Summed over frames, they give the challenger's precision, recall and F1 against the
    champion, and the count and confidence deltas."""

    label: str = Field(max_length=100)
    champion: int = Field(ge=0, le=65_535, description="the champion's boxes of this class")
    challenger: int = Field(ge=0, le=65_535, description="the challenger's boxes of this class")
    matched: int = Field(ge=0, le=65_535, description="pairs matched at IoU 0.5")
    score_delta_sum: float = Field(
        ge=-65_535, le=65_535, description="challenger score - champion score, summed over the matched pairs"
    )
    champion_score_sum: float = Field(ge=0, le=65_535)
    challenger_score_sum: float = Field(ge=0, le=65_535)


class ShadowPrediction(Prediction):
    """A challenger's detections on one frame of the share it sees in shadow (``model_name``, ``model_version``),
    beside the champion's on the same frame: only ever on the shadow-predictions topic, never in the champion's
    predictions, metrics or alerts."""

    champion_name: str = Field(description="the champion that saw the same frame")
    champion_version: str
    agreement: list[ClassAgreement] = Field(description="per class seen by either model on this frame")


class ModelChange(_Record):
    """A scope's champion changed through the API: ``assign`` (set), ``promote`` (its challenger became the
    champion) or ``rollback`` (the champion before the last promotion is back). Keyed by scope; the store keeps
    every one: who, when, from which model version to which."""

    schema_version: Literal[1] = RECORD_SCHEMA_VERSION
    change_id: str = Field(min_length=1, max_length=100)
    scope: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$",
                       description="'fleet', 'site:<name>' or a camera id")  # fmt: skip
    action: Literal["assign", "promote", "rollback"]
    from_model: str = Field("", max_length=200, description="the champion before: name (empty: none assigned)")
    from_version: str = Field("", max_length=100)
    to_model: str = Field(max_length=200, description="the champion after")
    to_version: str = Field(max_length=100)
    challenger: str = Field("", max_length=200, description="name@version of the challenger after; empty: none")
    share: float = Field(0.0, ge=0, le=1, description="the challenger's share of frames after")
    by: str = Field(min_length=1, max_length=100, description="who, by the name they gave")
    via: str = Field("", max_length=200, description="the caller's API token (a prefix of its SHA-256) and address")
    at: float = Field(default_factory=time.time, description="unix seconds")
    comment: str = Field("", max_length=1000)


class DriftStatistic(_Record):
    """One detector's statistic for one signal of a camera at one instant, with the threshold it is held to:
    the monitors' state sampled every ``CVOPS_MONITOR_STATS_EVERY_S`` per camera, for plots over time."""

    detector: str = Field(min_length=1, max_length=64, description="e.g. ks_holm, chi_square, autoencoder")
    signal: str = Field(min_length=1, max_length=64, description="e.g. brightness_distribution, embedding_outlier")
    statistic: float = Field(ge=-1e12, le=1e12, description="p-value, score or measure; see the docs' table")
    threshold: float = Field(ge=-1e12, le=1e12)
    drift: bool = Field(description="whether the detector holds the signal as drifted now")
    window: int = Field(0, ge=0, le=2**32 - 1, description="values the statistic was computed over")


# Detectors whose statistic is a p-value: drift lies below the threshold. Every other one drifts above it.
P_VALUE_DETECTORS = frozenset({"ks_holm", "chi_square", "ks"})
# Detectors whose statistic drifts below the threshold: the p-values, and the expected precision (``cbpe``).
BELOW_DETECTORS = P_VALUE_DETECTORS | {"cbpe"}


class FrameMetrics(_Record):
    """Health signals of one frame (see :mod:`streams.monitor.signals`)."""

    schema_version: Literal[1] = RECORD_SCHEMA_VERSION
    frame_id: str
    camera_id: str
    seq: int
    captured_at: float = Field(description="unix seconds")
    processed_at: float = Field(description="unix seconds")
    model_name: str
    model_version: str
    encoding: Encoding
    bytes: int = Field(ge=0, description="encoded image size")
    width: int = Field(gt=0, description="px, decoded")
    height: int = Field(gt=0, description="px, decoded")
    aspect_ratio: float = Field(gt=0, description="width / height")
    brightness: float = Field(ge=0, le=255, description="mean luma, 0-255")
    blur: float = Field(
        ge=0,
        description="sharpness at a standard contrast: variance of the Laplacian x 50^2 / max(contrast, 10)^2; "
        "lower is blurrier",
    )
    inference_ms: float = Field(ge=0, description="this frame's share of its batch's inference")
    detections: int = Field(ge=0, description="how many the model made")
    contrast: float = Field(0.0, ge=0, le=255, description="std of luma, 0-255")
    saturation: float = Field(0.0, ge=0, le=255, description="mean HSV saturation, 0-255")
    under_exposed: float = Field(0.0, ge=0, le=1, description="share of pixels with luma <= 16")
    over_exposed: float = Field(0.0, ge=0, le=1, description="share of pixels with luma >= 239")
    frame_diff: float | None = Field(None, ge=0, le=255, description="mean |luma change| since the last frame")
    black: bool = Field(False, description="brightness under 10 and contrast under 5 (0-255): nothing to see")
    mean_confidence: float = Field(0.0, ge=0, le=1, description="mean detection score, 0 without detections")
    embedding: list[float] | None = Field(
        None, description="image embedding (sampled frames only, see CVOPS_EMBEDDING_EVERY), for drift monitoring"
    )
    embedding_model: str = Field("", description="name@version of the model that gave the embedding")
    outlier_score: float | None = Field(
        None, ge=0, le=1e12, description="the camera's autoencoder outlier score of this frame's embedding"
    )
    drift: list[DriftStatistic] = Field(
        default_factory=list,
        max_length=256,
        description="every ready detector's statistic, on one frame per camera every CVOPS_MONITOR_STATS_EVERY_S",
    )


class Alert(_Record):
    schema_version: Literal[1] = RECORD_SCHEMA_VERSION
    alert_id: str = Field(description="deterministic (camera, signal, frame); a resolve carries its raise's")
    type: AlertType
    status: Literal["raised", "resolved", "suppressed"] = Field(
        "raised",
        description="suppressed: raised while another alert of the camera (caused_by) explains it; a symptom, "
        "not an alert of its own (docs/alerts.md)",
    )
    severity: Literal["info", "warning", "critical"] = "warning"
    camera_id: str
    signal: str = Field(description="what moved: brightness, blur_distribution, class_mix, camera_moved, black...")
    value: float = Field(description="the statistic that crossed the threshold")
    threshold: float = Field(description="the bound it crossed (a p-value's level for a test)")
    window: int = Field(ge=0, description="frames the statistic was computed over")
    model_name: str = ""
    model_version: str = ""
    evidence_frame_ids: list[str] = Field(default_factory=list, description="frames that show it (evidence topic)")
    raised_at: float = Field(description="unix seconds")
    message: str
    caused_by: str = Field(
        "", max_length=200, description="the alert id of the cause this alert is a symptom of; empty for a cause"
    )


MonitorOverrides = create_model(
    "MonitorOverrides",
    __base__=_Record,
    __doc__="""Monitor settings for the fleet or one camera; a field left out keeps the level below (camera over
fleet over the workers' CVOPS_ settings). See :mod:`core.fleetconfig` for which apply at once and
which when the camera's references are next learned.""",
    **override_fields(),
)
"""Monitor settings for the fleet or one camera, every field optional: one per setting declared with an
override in :data:`core.monitoring.MONITOR_SETTINGS` (its name, type and bounds come from there)."""


MODEL_REF = r"^[A-Za-z0-9_.-]+(@[A-Za-z0-9_.+-]+)?$"  # a model of the registry: name or name@version


class ModelAssignment(_Record):
    """Which models a scope's cameras' frames go to (see :mod:`core.assignment`): a field left out keeps the
    level below (camera over site over fleet over the workers' ``CVOPS_MODEL``)."""

    champion: str | None = Field(
        None,
        max_length=200,
        pattern=MODEL_REF,
        description="the model whose predictions, metrics and alerts the cameras have (name or name@version)",
    )
    challenger: str | None = Field(
        None,
        max_length=200,
        pattern=MODEL_REF,
        description="a model run in shadow on a share of the frames: its predictions go to shadow-predictions only",
    )
    share: float | None = Field(
        None,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="the share of each camera's frames the challenger also sees, 0-1 (0: no shadow)",
    )
    previous: str | None = Field(
        None,
        max_length=200,
        pattern=MODEL_REF,
        description="the champion before the last promotion at this scope: what a roll back returns to",
    )


class CameraConfig(_Record):
    """Monitor settings and model assignment of the fleet (``scope`` "fleet"), of a site (``site:<name>``) or
    of one camera, on the compacted config topic, keyed by the scope. A tombstone (no value) removes them."""

    schema_version: Literal[1] = RECORD_SCHEMA_VERSION
    scope: str = Field(
        min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$",
        description="'fleet', 'site:<name>' or a camera id",
    )  # fmt: skip
    overrides: MonitorOverrides = Field(default_factory=MonitorOverrides)
    models: ModelAssignment | None = Field(None, description="the models its cameras' frames go to; none: the "
                                           "level below's")  # fmt: skip
    relearn_after: float | None = Field(
        None, description="unix s: learn the camera's references again from its frames after this time"
    )
    updated_at: float = Field(default_factory=time.time, description="unix seconds")
    updated_by: str = Field("", max_length=200)


class TrueObject(_Record):
    label: str = Field(min_length=1, max_length=100)
    box: tuple[float, float, float, float] | None = Field(
        None, description="x1, y1, x2, y2 in the frame's pixels; none for an image-level label"
    )


class Feedback(_Record):
    """Ground truth for one frame, sent back by people or a better model; keyed by camera id."""

    schema_version: Literal[1] = RECORD_SCHEMA_VERSION
    frame_id: str = Field(min_length=1, max_length=200)
    camera_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    objects: list[TrueObject] = Field(max_length=1000, description="every object in the frame; empty: none")
    labelled_at: float = Field(default_factory=time.time, description="unix seconds")
    source: str = Field("", max_length=100, description="who labelled it, e.g. a labelling tool's name")


class _Thumbnail(_Record):
    """A small JPEG of a frame (or of a reference view), with the sizes to place the frame's boxes on it."""

    captured_at: float = Field(description="unix seconds")
    width: int = Field(gt=0, le=4096, description="thumbnail px")
    height: int = Field(gt=0, le=4096, description="thumbnail px")
    source_width: int = Field(gt=0, description="px of the frame the thumbnail was made from")
    source_height: int = Field(gt=0)
    image_b64: str = Field(max_length=400_000, description="the thumbnail, JPEG, base64")

    def image(self) -> bytes:
        return base64.b64decode(self.image_b64)


class Evidence(_Thumbnail):
    """A thumbnail of a frame that proves an alert, of the reference view the frame was compared with, or of
    an edge case: a frame worth a human look (an outlying image, ambiguous detections).

    Published by the worker on the evidence topic when it raises an alert: one record per evidence frame it
    still holds (the alert's ``evidence_frame_ids``, newest last) and, for a moved camera, its reference view;
    and for each edge case, at most ``CVOPS_EDGE_CASES_PER_HOUR`` per camera (``alert_id`` is then the edge
    case's own id).
    Boxes are not drawn in: the predictions topic has them, in ``source_width`` x ``source_height`` pixels.
    """

    schema_version: Literal[1] = RECORD_SCHEMA_VERSION
    alert_id: str
    camera_id: str
    frame_id: str = Field(description="the frame's id; for a reference view, 'reference:<alert_id>'")
    role: Literal["evidence", "reference", "edge_case"] = "evidence"
    reason: str = Field(
        "", max_length=50, description="why an edge case was kept: outlier, low_confidence; empty for evidence"
    )
    score: float = Field(0.0, description="the edge case's score: outlier score, or mean detection confidence")


class CameraView(_Thumbnail):
    """What a camera sees now (``latest``: a thumbnail of one of its frames, every ``CVOPS_VIEW_EVERY_S``),
    and the reference view its moved-camera check compares frames with (``reference``, when learned). The
    store keeps the newest of each per camera: the fleet's tiles and the camera view show them."""

    schema_version: Literal[1] = RECORD_SCHEMA_VERSION
    camera_id: str = Field(min_length=1)
    role: Literal["latest", "reference"]
    frame_id: str = Field(description="the frame the view was taken from")


class DeadLetter(_Record):
    schema_version: Literal[1] = RECORD_SCHEMA_VERSION
    source_topic: str
    partition: int
    offset: int
    key: str | None
    reason: str = Field(
        description="machine-readable code: bad_magic, truncated, bad_header, unknown_schema_version, empty_image, "
        "corrupt_image, too_many_pixels, size_mismatch, key_mismatch, bad_record, bad_json, too_deep, "
        "number_too_large, non_finite, capture_time_out_of_range, delivery_failed..."
    )
    detail: str = Field(description="what was wrong, for people")
    payload_b64: str = Field(description="the original value, base64")
    received_at: float = Field(default_factory=time.time, description="unix seconds")

    @classmethod
    def of(cls, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, err):
        reason = getattr(err, "reason", type(err).__name__)
        detail = getattr(err, "detail", str(err))
        return cls(
            source_topic=topic,
            partition=partition,
            offset=offset,
            key=key.decode("utf-8", "replace") if key is not None else None,
            reason=reason,
            detail=detail[:2000],
            payload_b64=base64.b64encode(value or b"").decode(),
        )

    def payload(self) -> bytes:
        return base64.b64decode(self.payload_b64)


class WorkerStatus(_Record):
    """What a stream worker runs and how it is doing; published every few seconds, keyed by worker id."""

    schema_version: Literal[1] = RECORD_SCHEMA_VERSION
    worker_id: str
    model_name: str = Field(description="its own detector (CVOPS_MODEL): the champion where the config names none")
    model_version: str
    models: list[str] = Field(
        default_factory=list, description="name@version of every model it serves (champions and challengers)"
    )
    providers: list[str] = Field(description="ONNX Runtime providers in use, as the session reports them")
    decoder: str = Field(
        "", max_length=200, description="where its frames are decoded, measured and pre-processed (frame backend)"
    )
    batch_max_size: int
    partitions: list[int] = Field(description="frames partitions assigned to this worker")
    frames_per_s: float
    mean_batch: float
    dead_letters: int = Field(description="since the previous status")
    alerts: int = Field(description="since the previous status")
    lag_s: float = Field(0.0, ge=0, description="age of the newest frame in the last batch, s: how far behind it is")
    config_updated_at: float = Field(0.0, ge=0, description="unix s of the newest config record it has applied")
    member_id: str = Field("", description="its member id in the consumer group now (each rejoin changes it)")
    sent_at: float = Field(description="unix seconds")


class CameraInfo(_Record):
    """Where a camera is and what it is (the inventory), on the compacted ``cameras`` topic keyed by
    ``<source>:<camera_id>``: a gateway declares what it was told (``--site``, ``--tag``) and an operator sets
    the rest through the API; the operator's fields win."""

    schema_version: Literal[1] = RECORD_SCHEMA_VERSION
    camera_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    source: Literal["gateway", "operator"]
    site: str | None = Field(None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    tags: dict[str, str] = Field(default_factory=dict, max_length=20, description="free key=value labels")
    notes: str | None = Field(None, max_length=1000, description="location, mounting...")
    gateway: str | None = Field(None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    updated_at: float = Field(default_factory=time.time, description="unix seconds")

    @field_validator("tags")
    @classmethod
    def _short_tags(cls, tags: dict[str, str]) -> dict[str, str]:
        for k, v in tags.items():
            if not (0 < len(k) <= 50 and len(v) <= 100) or not k.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"tag {k[:50]!r}: keys are 1-50 letters, digits, - or _; values at most 100")
        return tags


class IncidentRecord(_Record):
    """An incident across cameras changed (``streams.incidents``): one record per raise, join and resolve,
    keyed by incident id. ``event_id`` is stable across replays, for receivers to deduplicate on."""

    schema_version: Literal[1] = RECORD_SCHEMA_VERSION
    event_id: str = Field(max_length=200)
    incident_id: str = Field(max_length=100)
    status: Literal["raised", "joined", "resolved"]
    kind: Literal["environment", "upstream", "model", "device"]
    scope: str = Field(max_length=300, description="site:<name>, tag:<k=v>, gateway:<id>, model:<name@version> or "
                       "camera:<id>")  # fmt: skip
    type: AlertType
    signal: str = Field(description="the shared signal; an image signal's range rule and distribution test are one "
                        "(brightness for brightness_distribution)")  # fmt: skip
    direction: Literal["up", "down", "changed"]
    cameras: list[str] = Field(description="member cameras so far")
    members: dict[str, str] = Field(description="member alert id -> camera id: the alerts that raised or joined it, "
                                    "and their inhibited symptoms (caused_by)")  # fmt: skip
    changed_alert_ids: list[str] = Field(description="the alerts this record is about (new members on a join)")
    opened_at: float = Field(description="unix seconds")
    resolved_at: float | None = Field(
        None, allow_inf_nan=False, description="unix seconds, once every member has resolved"
    )
    summary: str = Field(description="one line for people")
    site: str = Field("", max_length=100, description="the site of every member camera when they share one (from "
                      "the inventory); empty otherwise")  # fmt: skip
    changed_at: float = Field(
        default_factory=time.time, description="unix seconds: when this change was made (the time of the alert "
        "record that made it, or of the processor's clock for an alert whose window closed)"
    )  # fmt: skip


class Acknowledgement(_Record):
    """A person acknowledged or silenced an incident or a camera, on the compacted ``acknowledgements`` topic
    keyed by :attr:`key` (the newest record of a key holds). It holds from ``at`` until ``until`` (null: until
    lifted, or for an incident until it ends); lifting one is a record whose ``until`` is its ``at``.

    An acknowledgement stops repeats (an incident's ``joined`` notifications); a silence stops every
    notification. An incident is acknowledged or silenced when it is itself, or when every one of its cameras
    is (``core.silences.Silences``). A silenced camera's alerts are recorded all the same."""

    schema_version: Literal[1] = RECORD_SCHEMA_VERSION
    action: Literal["acknowledge", "silence"]
    target: Literal["incident", "camera"]
    target_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$",
                           description="the incident's id or the camera's")  # fmt: skip
    by: str = Field(min_length=1, max_length=100, description="who, by the name they gave")
    via: str = Field("", max_length=200, description="what the server knew of the caller: its API token (a prefix "
                     "of the token's SHA-256) and address")  # fmt: skip
    at: float = Field(default_factory=time.time, description="unix seconds")
    until: float | None = Field(None, allow_inf_nan=False, description="unix seconds when it ends; null: until lifted")
    comment: str = Field("", max_length=1000)

    @property
    def key(self) -> str:
        return f"{self.action}:{self.target}:{self.target_id}"

    def holds(self, now: float) -> bool:
        """Whether it is in force at ``now`` (unix s)."""
        return self.until is None or now < self.until


def encode_record(record: _Record) -> bytes:
    return record.model_dump_json().encode()


def decode_record(model: type[_Record], value: bytes | str):
    """Parse a JSON record of ``model``; :class:`ContractError` with a reason code on anything else, and never
    another exception, whatever ``value`` holds.

    Reasons: ``empty_message`` (no value), ``bad_json`` (not UTF-8 JSON text, or a string with a lone surrogate,
    which no store can encode), ``too_deep`` (nested deeper than the parser goes), ``number_too_large`` (an
    integer of more digits than Python converts), ``bad_record`` (not an object, or not the contract's shape),
    ``unknown_schema_version``, ``non_finite`` (NaN, Infinity, or a number beyond a float, in a record that
    is otherwise valid).

    >>> decode_record(Feedback, b'{"schema_version": 1, "frame_id": "f", "camera_id": "c", "objects": []}').frame_id
    'f'
    >>> for bad in (b"[" * 100_000, b'{"n": 1' + b"0" * 5000 + b"}", b"[1]", b'{"schema_version": 1, "x": NaN}'):
    ...     try:
    ...         decode_record(Feedback, bad)
    ...     except ContractError as exc:
    ...         print(exc.reason)
    too_deep
    number_too_large
    bad_record
    bad_record
    """
    if value is None or (isinstance(value, bytes | bytearray | str) and not value):
        raise ContractError("empty_message", "the message has no value")
    non_finite: list[str] = []
    raw = _load_json(value, "bad_json", non_finite)
    if not isinstance(raw, dict):
        raise ContractError("bad_record", f"value is a JSON {type(raw).__name__}, not an object")
    if raw.get("schema_version") != RECORD_SCHEMA_VERSION:
        raise ContractError(
            "unknown_schema_version", f"{model.__name__} schema_version {_clip(repr(raw.get('schema_version')))}"
        )
    try:
        record = model.model_validate(raw)
    except ValidationError as exc:
        raise ContractError("bad_record", _short(exc)) from None
    except Exception as exc:  # a validator that chokes on a hostile value is still that value's fault
        raise ContractError("bad_record", f"{type(exc).__name__}: {_clip(str(exc))}") from None
    if non_finite:
        raise ContractError("non_finite", f"{', '.join(non_finite[:5])} is not a finite number")
    return record


def load_json(value: bytes | str):
    """JSON text as Python values, or :class:`ContractError` (``bad_json``, ``too_deep``, ``number_too_large``),
    never another exception; NaN and Infinity are refused. For input that is not yet a record (a file of labels).

    >>> load_json('{"a": [1, 2]}')
    {'a': [1, 2]}
    """
    return _load_json(value, "bad_json")


_LONE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _load_json(value, reason: str, non_finite: list[str] | None = None):
    """``json.loads(value)``, or :class:`ContractError` (``reason``, ``too_deep`` or ``number_too_large``) on
    anything it, or the text, cannot give. The tokens NaN, Infinity and -Infinity, and numbers beyond a
    float (``1e400``), are parsed as floats and noted in ``non_finite`` when given (refused otherwise)."""

    def constant(token: str) -> float:
        if non_finite is None:
            raise ContractError(reason, f"{token} is not JSON")
        non_finite.append(token)
        return float(token)

    def number(token: str) -> float:
        x = float(token)
        if x in _INFINITE:
            constant(_clip(token))
        return x

    if not isinstance(value, bytes | bytearray | str):
        raise ContractError(reason, f"the value is {type(value).__name__}, not bytes")
    try:
        raw = json.loads(value, parse_constant=constant, parse_float=number)
    except ContractError:
        raise
    except RecursionError:
        raise ContractError("too_deep", "the JSON is nested deeper than the parser goes") from None
    except json.JSONDecodeError as exc:
        raise ContractError(reason, str(exc)) from None
    except UnicodeDecodeError as exc:
        raise ContractError(reason, f"not UTF-8: {exc}") from None
    except ValueError as exc:  # int() past sys.get_int_max_str_digits()
        raise ContractError("number_too_large", _clip(str(exc))) from None
    except Exception as exc:  # nothing else is known to come out of json.loads; if it does, it is the value's fault
        raise ContractError(reason, f"{type(exc).__name__}: {_clip(str(exc))}") from None
    text = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    if b"\\u" in text and _LONE_SURROGATE.search(text) and _has_lone_surrogate(raw):
        raise ContractError(reason, "a string holds a lone surrogate (\\ud800-\\udfff): not Unicode text")
    return raw


_INFINITE = (float("inf"), float("-inf"))


def _has_lone_surrogate(raw) -> bool:
    """Whether a string in the parsed JSON ``raw`` (keys included) cannot be encoded as UTF-8. A loop, not a
    recursion: ``raw`` may be nested almost as deep as the parser went."""
    todo = [raw]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            todo += item.keys()
            todo += item.values()
        elif isinstance(item, list):
            todo += item
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False


def _clip(text: str, most: int = 200) -> str:
    return text if len(text) <= most else f"{text[:most]}... ({len(text)} characters)"


def _short(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)
