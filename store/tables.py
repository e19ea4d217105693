"""The tables the writer fills, each declared once: its topic and contract, its columns with their ClickHouse
types and the contract field each is read from, its engine, partitioning, sort key and skip indexes.

Everything else comes from these declarations: the ``CREATE TABLE`` of a fresh store (:meth:`Table.create`,
which :func:`store.schema.migrate` runs before the migrations; on an existing store the migrations built the
same table, and a test compares the two with ``SHOW CREATE TABLE``), the writer's column list and its
columnar rows (:meth:`Table.columns_of`), and one record's row (:meth:`Table.row`).

A column's ``source`` is a path in the contract: a field (``seq``), a field of a nested model
(``timings.queue_ms``), an item of a tuple (``box[0]``), and, for the arrays of a ``Nested`` column, a field of
each item of a list (``detections[].label``). ``DateTime64(3, ...)`` columns take unix seconds and store
milliseconds; ``convert`` turns a value into what its column holds otherwise.

>>> ALERTS.columns[:3]
('alert_id', 'status', 'type')
>>> print(ALERTS.create(ttl_days=30).splitlines()[0])
CREATE TABLE IF NOT EXISTS alerts (
>>> ALERTS.row(Alert(alert_id="a1", type="data_drift", camera_id="cam-1", signal="blur", value=3.0,
...     threshold=2.0, window=60, raised_at=1.5, message="blur out of range"))[-4:]
([], 1500, 'blur out of range', '')
"""

from __future__ import annotations

import base64
import functools
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from operator import attrgetter, itemgetter

import numpy as np

from core.contracts import (
    Acknowledgement,
    Alert,
    CameraInfo,
    CameraView,
    DeadLetter,
    Evidence,
    FrameMetrics,
    IncidentRecord,
    ModelChange,
    Prediction,
    ShadowPrediction,
)
from store.settings import TTL_COLUMNS

TS = "DateTime64(3, 'UTC')"
TS_DELTA = "Delta(8), ZSTD(1)"  # the codec of capture and processing times, as ClickHouse writes it back


def _ts(unix_s: float) -> int:
    """Unix seconds as the ticks of a ``DateTime64(3)`` column (ms), which clickhouse-connect sends as is."""
    return round(unix_s * 1000)


def ts_column(unix_s: Sequence[float]) -> list[int]:
    """:func:`_ts` of a whole column: numpy rounds half to even on the same products, as ``round`` does.

    >>> ts_column([1.0005, 2.5])
    [1000, 2500]
    """
    ms = np.rint(np.fromiter(unix_s, np.float64, len(unix_s)) * 1000)
    if len(ms) and not np.abs(ms).max() < 2**53:  # beyond exact float integers (or not finite): one by one
        return [_ts(t) for t in unix_s]
    return ms.astype(np.int64).tolist()


def _or_empty(text: str | None) -> str:
    return text or ""


def _ts_or_null(unix_s: float | None) -> int | None:
    return None if unix_s is None else _ts(unix_s)


def _decoded_size(b64: str) -> int:
    """Bytes that a base64 text decodes to, about (the dead-letter payload's size, without decoding it)."""
    return len(b64) * 3 // 4


@dataclass(frozen=True)
class Column:
    """One column: its name and ClickHouse type as ``SHOW CREATE TABLE`` writes them, the contract path it is
    read from (its own name when empty), a conversion of each value, its default and codec."""

    name: str
    type: str
    source: str = ""
    convert: Callable | None = None
    default: str = ""
    codec: str = ""

    @property
    def path(self) -> str:
        return self.source or self.name

    @property
    def ddl(self) -> str:
        default = f" DEFAULT {self.default}" if self.default else ""
        codec = f" CODEC({self.codec})" if self.codec else ""
        return f"`{self.name}` {self.type}{default}{codec}"


@functools.cache
def _getter(path: str) -> Callable:
    """A function of a record that reads ``path`` (``a.b``, ``box[0]``, ``timings.queue_ms``)."""
    steps: list[Callable] = []
    for part in path.split("."):
        m = re.fullmatch(r"(\w+)(?:\[(\d+)\])?", part)
        if m is None:
            raise ValueError(f"bad column source {path!r}")
        steps.append(attrgetter(m[1]))
        if m[2] is not None:
            steps.append(itemgetter(int(m[2])))
    if len(steps) == 1:
        return steps[0]
    if all(isinstance(s, attrgetter) for s in steps):
        return attrgetter(path)

    def get(record):
        for step in steps:
            record = step(record)
        return record

    return get


class Fields:
    """A batch's records (contract models or the writer's decoded structs) read field by field: ``fields["seq"]``
    is the list of every record's ``seq``, dotted names reach nested models (``fields["timings.queue_ms"]``),
    ``fields["detections[].label"]`` is each record's list of labels. Each is read once, for the checks and the
    columns alike."""

    def __init__(self, items: list):
        self.items = items
        self._columns: dict[str, list] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, path: str) -> list:
        column = self._columns.get(path)
        if column is None:
            column = self._columns[path] = self._read(path)
        return column

    def _read(self, path: str) -> list:
        if "[]." not in path:
            return list(map(_getter(path), self.items))
        outer, inner = path.split("[].", 1)
        lists = self[outer]
        if not any(lists):  # the usual batch of frames without a sample: shared empty arrays
            return [[]] * len(lists)
        flat, spans = self._flat(outer)
        values = list(map(_getter(inner), flat))
        return [values[a:b] for a, b in spans]

    def _flat(self, outer: str) -> tuple[list, list[tuple[int, int]]]:
        """Every item of list field ``outer`` across the batch, and each record's span of them."""
        key = f"{outer}[]"
        cached = self._columns.get(key)
        if cached is None:
            lists = self[outer]
            ends = list(accumulate(map(len, lists)))
            spans = list(zip([0, *ends[:-1]], ends, strict=True))
            cached = self._columns[key] = [[x for one in lists for x in one], spans]
        return cached[0], cached[1]


@dataclass(frozen=True)
class Table:
    """A table the writer fills from one topic; see the module docstring."""

    name: str
    topic: str  # the topic's name in :mod:`core.topology`, without the configured prefix
    contract: type
    spec: tuple[Column, ...]
    engine: str
    order_by: str
    partition_by: str = ""
    indexes: tuple[str, ...] = ()
    # Whether the writer decodes its records with msgspec first (store.writer's fast path): not for a contract
    # msgspec cannot mirror (validators, maps), whose few records take the contract's path.
    fast_path: bool = True
    columns: tuple[str, ...] = field(init=False)
    types: tuple[str, ...] = field(init=False)  # the ClickHouse type of each column, in :attr:`columns` order

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(c.name for c in self.spec))
        object.__setattr__(self, "types", tuple(c.type for c in self.spec))

    @property
    def table(self) -> str:
        return self.name

    @property
    def ttl_column(self) -> str:
        """The column its rows expire by; empty for a table whose rows never expire (the inventory)."""
        return TTL_COLUMNS.get(self.name, "")

    def create(self, ttl_days: int) -> str:
        """The ``CREATE TABLE`` of this table as it is now, with a retention of ``ttl_days``."""
        items = [*(c.ddl for c in self.spec), *(f"INDEX {i}" for i in self.indexes)]
        body = ",\n".join(f"    {item}" for item in items)
        lines = [f"CREATE TABLE IF NOT EXISTS {self.name} (", body, f") ENGINE = {self.engine}"]
        if self.partition_by:
            lines.append(f"PARTITION BY {self.partition_by}")
        lines.append(f"ORDER BY {self.order_by}")
        if self.ttl_column:
            lines.append(f"TTL toDateTime({self.ttl_column}) + INTERVAL {int(ttl_days)} DAY")
        return "\n".join(lines)

    def columns_of(self, fields: Fields) -> list[list]:
        """The batch's columns, in :attr:`columns` order, ready for a columnar insert."""
        out = []
        for c in self.spec:
            values = fields[c.path]
            if c.convert is not None:
                values = list(map(c.convert, values))
            elif c.type.startswith("DateTime64(3"):
                values = ts_column(values)
            elif c.type.startswith("Nullable(DateTime64(3"):
                values = list(map(_ts_or_null, values))
            out.append(values)
        return out

    def row(self, record) -> tuple:
        """One record (its contract model) as a row, in :attr:`columns` order."""
        return tuple(column[0] for column in self.columns_of(Fields([record])))


def mismatches(table: Table) -> list[str]:
    """How ``table``'s columns disagree with its contract: a source that is not a field of it, or a field whose
    type its column cannot hold (an int in a Float column, a float in an integer one, text in a number...);
    empty when they agree. Columns with a ``convert`` are checked for their source only.

    >>> mismatches(ALERTS)
    []
    """
    found = []
    for c in table.spec:
        try:
            annotation = _annotation(table.contract, c.path)
        except (KeyError, TypeError) as exc:
            found.append(f"{table.name}.{c.name}: {c.path} is not a field of {table.contract.__name__} ({exc})")
            continue
        each = re.fullmatch(r"Array\((.*)\)", c.type) if "[]" in c.path else None  # a Nested column's arrays
        if c.convert is None and not _holds(each[1] if each else c.type, annotation):
            found.append(f"{table.name}.{c.name}: {c.type} cannot hold {c.path}: {annotation}")
    return found


def _annotation(model: type, path: str):
    """The type annotation at ``path`` in ``model`` (``[]`` and ``[i]`` step into lists and tuples)."""
    annotation = model
    for part in re.findall(r"\w+|\[\d*\]", path):
        if part.startswith("["):
            args = typing.get_args(annotation)
            annotation = args[0] if part == "[]" or typing.get_origin(annotation) is list else args[int(part[1:-1])]
        else:
            annotation = annotation.model_fields[part].annotation
    return annotation


_HOLDS = {"String": (str,), "Bool": (bool,), "Float": (float,), "UInt": (int,), "Int": (int,), "DateTime": (float,)}


def _holds(ch_type: str, annotation) -> bool:
    """Whether a ClickHouse column of ``ch_type`` holds every value of ``annotation`` (bounds aside)."""
    inner = re.fullmatch(r"(Nullable|LowCardinality|Array)\((.*)\)", ch_type)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if (pair := re.fullmatch(r"Map\(((?:LowCardinality\()?\w+\)?), (.*)\)", ch_type)) is not None:
        return origin is dict and _holds(pair[1], args[0]) and _holds(pair[2], args[1])
    optional = origin in (typing.Union, types.UnionType) and type(None) in args
    if inner is not None and inner[1] == "Nullable":
        return optional and _holds(inner[2], next(a for a in args if a is not type(None)))
    if optional:
        return False
    if inner is not None and inner[1] == "LowCardinality":
        return _holds(inner[2], annotation)
    if inner is not None:  # Array
        return origin is list and _holds(inner[2], args[0])
    if origin is typing.Literal:
        return all(_holds(ch_type, type(a)) for a in args)
    kind = re.match(r"[A-Za-z]+?(?=\d|$|\()", ch_type)
    return kind is not None and annotation in _HOLDS.get(kind[0], ())


def _thumbnail(ts_codec: str) -> tuple[Column, ...]:
    return (
        Column("captured_at", TS, codec=ts_codec),
        Column("width", "UInt16"),
        Column("height", "UInt16"),
        Column("source_width", "UInt32"),
        Column("source_height", "UInt32"),
        Column("image", "String", "image_b64", base64.b64decode, codec="NONE"),
    )


LC = "LowCardinality(String)"

FRAME_METRICS = Table(
    "frame_metrics", "metrics", FrameMetrics,
    (
        Column("frame_id", "String"), Column("camera_id", LC), Column("seq", "UInt64"),
        Column("captured_at", TS, codec=TS_DELTA), Column("processed_at", TS, codec=TS_DELTA),
        Column("model_name", LC), Column("model_version", LC), Column("encoding", LC), Column("bytes", "UInt32"),
        Column("width", "UInt32"), Column("height", "UInt32"), Column("aspect_ratio", "Float32"),
        Column("brightness", "Float32"), Column("blur", "Float32"), Column("inference_ms", "Float32"),
        Column("detections", "UInt16"),
        # migration 3
        Column("contrast", "Float32"), Column("saturation", "Float32"), Column("under_exposed", "Float32"),
        Column("over_exposed", "Float32"), Column("frame_diff", "Nullable(Float32)"), Column("black", "Bool"),
        Column("mean_confidence", "Float32"),
        # migration 6
        Column("outlier_score", "Nullable(Float32)"),
        Column("drift.detector", f"Array({LC})", "drift[].detector"),
        Column("drift.signal", f"Array({LC})", "drift[].signal"),
        Column("drift.statistic", "Array(Float64)", "drift[].statistic"),
        Column("drift.threshold", "Array(Float64)", "drift[].threshold"),
        Column("drift.drifted", "Array(Bool)", "drift[].drift"),
        Column("drift.window", "Array(UInt32)", "drift[].window"),
    ),
    engine="ReplacingMergeTree(processed_at)",
    partition_by="toYYYYMMDD(captured_at)",
    order_by="(camera_id, captured_at, frame_id)",
)  # fmt: skip

PREDICTIONS = Table(
    "predictions", "predictions", Prediction,
    (
        Column("frame_id", "String"), Column("camera_id", LC), Column("seq", "UInt64"),
        Column("captured_at", TS, codec=TS_DELTA), Column("processed_at", TS, codec=TS_DELTA),
        Column("model_name", LC), Column("model_version", LC), Column("width", "UInt32"), Column("height", "UInt32"),
        Column("batch_size", "UInt16"), Column("queue_ms", "Float32", "timings.queue_ms"),
        Column("decode_ms", "Float32", "timings.decode_ms"),
        Column("preprocess_ms", "Float32", "timings.preprocess_ms"),
        Column("inference_ms", "Float32", "timings.inference_ms"),
        Column("postprocess_ms", "Float32", "timings.postprocess_ms"),
        Column("detections.label", f"Array({LC})", "detections[].label"),
        Column("detections.class_id", "Array(UInt16)", "detections[].class_id"),
        Column("detections.score", "Array(Float32)", "detections[].score"),
        Column("detections.x1", "Array(Float32)", "detections[].box[0]"),
        Column("detections.y1", "Array(Float32)", "detections[].box[1]"),
        Column("detections.x2", "Array(Float32)", "detections[].box[2]"),
        Column("detections.y2", "Array(Float32)", "detections[].box[3]"),
    ),
    engine="ReplacingMergeTree(processed_at)",
    partition_by="toYYYYMMDD(captured_at)",
    order_by="(camera_id, captured_at, frame_id)",
    # migration 8: a frame's boxes are looked up by frame id, outside the sort key
    indexes=("frame_id_bloom frame_id TYPE bloom_filter(0.01) GRANULARITY 1",),
)  # fmt: skip

SHADOW_PREDICTIONS = Table(
    "shadow_predictions", "shadow-predictions", ShadowPrediction,
    (
        Column("frame_id", "String"), Column("camera_id", LC), Column("seq", "UInt64"),
        Column("captured_at", TS, codec=TS_DELTA), Column("processed_at", TS, codec=TS_DELTA),
        Column("model_name", LC), Column("model_version", LC), Column("champion_name", LC),
        Column("champion_version", LC), Column("width", "UInt32"), Column("height", "UInt32"),
        Column("batch_size", "UInt16"), Column("inference_ms", "Float32", "timings.inference_ms"),
        Column("detections.label", f"Array({LC})", "detections[].label"),
        Column("detections.class_id", "Array(UInt16)", "detections[].class_id"),
        Column("detections.score", "Array(Float32)", "detections[].score"),
        Column("detections.x1", "Array(Float32)", "detections[].box[0]"),
        Column("detections.y1", "Array(Float32)", "detections[].box[1]"),
        Column("detections.x2", "Array(Float32)", "detections[].box[2]"),
        Column("detections.y2", "Array(Float32)", "detections[].box[3]"),
        # per class seen by either model on the frame: summed over frames, the challenger's agreement
        Column("agreement.label", f"Array({LC})", "agreement[].label"),
        Column("agreement.champion", "Array(UInt16)", "agreement[].champion"),
        Column("agreement.challenger", "Array(UInt16)", "agreement[].challenger"),
        Column("agreement.matched", "Array(UInt16)", "agreement[].matched"),
        Column("agreement.score_delta_sum", "Array(Float64)", "agreement[].score_delta_sum"),
        Column("agreement.champion_score_sum", "Array(Float64)", "agreement[].champion_score_sum"),
        Column("agreement.challenger_score_sum", "Array(Float64)", "agreement[].challenger_score_sum"),
    ),
    engine="ReplacingMergeTree(processed_at)",
    partition_by="toYYYYMMDD(captured_at)",
    # a frame is seen by one challenger at a time; another after a change of challenger is a row of its own
    order_by="(camera_id, captured_at, frame_id, model_name, model_version)",
)  # fmt: skip

ALERTS = Table(
    "alerts", "alerts", Alert,
    (
        Column("alert_id", "String"), Column("status", LC), Column("type", LC), Column("severity", LC),
        Column("camera_id", LC), Column("signal", LC), Column("value", "Float64"), Column("threshold", "Float64"),
        Column("window", "UInt32"), Column("model_name", LC), Column("model_version", LC),
        Column("evidence_frame_ids", "Array(String)"), Column("raised_at", TS), Column("message", "String"),
        Column("caused_by", "String", default="''"),  # migration 9
    ),
    engine="ReplacingMergeTree",
    partition_by="toYYYYMM(raised_at)",
    order_by="(camera_id, alert_id, status)",
)  # fmt: skip

DEAD_LETTERS = Table(
    "dead_letters", "deadletters", DeadLetter,
    (
        Column("source_topic", LC), Column("partition", "UInt32"), Column("offset", "UInt64"),
        Column("key", "String", convert=_or_empty), Column("reason", LC), Column("detail", "String"),
        Column("payload_bytes", "UInt32", "payload_b64", _decoded_size), Column("received_at", TS),
    ),
    engine="ReplacingMergeTree",
    partition_by="toYYYYMM(received_at)",
    order_by="(source_topic, partition, offset)",
)  # fmt: skip

EVIDENCE_FRAMES = Table(
    "evidence_frames", "evidence", Evidence,
    (
        Column("alert_id", "String"), Column("camera_id", LC), Column("frame_id", "String"), Column("role", LC),
        *_thumbnail(TS_DELTA),
        Column("reason", LC), Column("score", "Float64"),  # migration 5
    ),
    engine="ReplacingMergeTree",
    partition_by="toYYYYMM(captured_at)",
    order_by="(camera_id, alert_id, frame_id)",
    # migration 8: an alert's evidence is looked up by alert id alone
    indexes=("alert_id_bloom alert_id TYPE bloom_filter(0.01) GRANULARITY 1",),
)  # fmt: skip

CAMERA_VIEWS = Table(
    "camera_views", "views", CameraView,
    (Column("camera_id", LC), Column("role", LC), Column("frame_id", "String"), *_thumbnail("")),
    engine="ReplacingMergeTree(captured_at)",  # one row per camera and role once merged: the newest capture wins
    order_by="(camera_id, role)",
)  # fmt: skip

INCIDENTS = Table(
    "incidents", "incidents", IncidentRecord,
    (
        Column("event_id", "String"), Column("incident_id", "String"), Column("status", LC), Column("kind", LC),
        Column("scope", "String"), Column("site", LC), Column("type", LC), Column("signal", LC),
        Column("direction", LC), Column("cameras", "Array(String)"),
        Column("members", "Map(String, String)"),  # the member alerts' ids -> their cameras
        Column("changed_alert_ids", "Array(String)"), Column("opened_at", TS),
        Column("resolved_at", f"Nullable({TS})"), Column("changed_at", TS), Column("summary", "String"),
    ),
    # One row per change (raise, join, resolve), keyed by its event id: a replayed record folds into its row.
    # An incident's latest state: argMax(..., changed_at) per incident_id.
    engine="ReplacingMergeTree(changed_at)",
    partition_by="toYYYYMM(opened_at)",
    order_by="(incident_id, event_id)",
    fast_path=False,
)  # fmt: skip

CAMERA_INVENTORY = Table(
    "camera_inventory", "cameras", CameraInfo,
    (
        Column("camera_id", LC), Column("source", LC), Column("site", LC, convert=_or_empty),
        Column("tags", "Map(String, String)"), Column("notes", "String", convert=_or_empty),
        Column("gateway", LC, convert=_or_empty), Column("updated_at", TS),
    ),
    # One row per camera and source once merged (the newest wins); the operator's fields win over the gateway's.
    engine="ReplacingMergeTree(updated_at)",
    order_by="(camera_id, source)",
    fast_path=False,
)  # fmt: skip

ACKNOWLEDGEMENTS = Table(
    "acknowledgements", "acknowledgements", Acknowledgement,
    (
        Column("action", LC), Column("target", LC), Column("target_id", "String"), Column("by", "String"),
        Column("via", "String"), Column("at", TS), Column("until", f"Nullable({TS})"), Column("comment", "String"),
    ),
    # Every acknowledgement, silence and lift, who and when; the one in force for a target: the newest by ``at``.
    engine="ReplacingMergeTree",
    partition_by="toYYYYMM(at)",
    order_by="(target, target_id, action, at)",
    fast_path=False,
)  # fmt: skip

MODEL_CHANGES = Table(
    "model_changes", "model-changes", ModelChange,
    (
        Column("change_id", "String"), Column("scope", "String"), Column("action", LC),
        Column("from_model", LC), Column("from_version", LC), Column("to_model", LC), Column("to_version", LC),
        Column("challenger", "String"), Column("share", "Float32"), Column("by", "String"), Column("via", "String"),
        Column("at", TS), Column("comment", "String"),
    ),
    # Every champion assigned, promoted or rolled back: who, when, from which version to which. Never expires.
    engine="ReplacingMergeTree",
    order_by="(scope, at, change_id)",
    fast_path=False,
)  # fmt: skip

TABLES: tuple[Table, ...] = (FRAME_METRICS, PREDICTIONS, ALERTS, EVIDENCE_FRAMES, CAMERA_VIEWS, DEAD_LETTERS,
                             INCIDENTS, CAMERA_INVENTORY, ACKNOWLEDGEMENTS, SHADOW_PREDICTIONS,
                             MODEL_CHANGES)  # fmt: skip
