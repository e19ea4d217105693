"""Is a record fit to store? A pure check, run by the writer after the topic contract has parsed it.

The contracts (:mod:`core.contracts`) say what a record looks like; this says what the store accepts:
finite numbers, sizes and counts that are not negative and fit their column (a ``UInt16`` cannot hold
70,000 detections, and one such row would fail its whole batch forever), boxes inside their frame,
an aspect ratio that agrees with width / height, timestamps near now, and text of a sane length (ids,
labels, messages: at most ``Limits.max_text`` characters each, and an alert names at most ``Limits.max_items``
evidence frames). A record that fails goes to the dead-letter topic with the reason; nothing is clamped or
coerced.

>>> from core.contracts import Alert
>>> a = Alert(alert_id="a1", type="data_drift", camera_id="cam-1", signal="blur", value=float("nan"),
...     threshold=1.0, window=60, raised_at=1e9, message="blur out of range")
>>> problems(a, now=1e9)
[('non_finite', 'value is nan')]
>>> problems(a.model_copy(update={"value": 2.0, "raised_at": 1e9 + 86400}), now=1e9)
[('bad_timestamp', 'raised_at=1000086400.0 is 86400 s in the future')]

The writer checks a whole batch at once with :func:`suspects`: the same tests column by column, which name
the rows that may have a problem; only those go through :func:`problems`, for the exact codes and details.

>>> ok = a.model_copy(update={"value": 2.0})
>>> batch = [ok, a, ok.model_copy(update={"window": -1})]
>>> sorted(suspects(Alert, lambda name: [getattr(r, name) for r in batch], now=1e9))
[1, 2]
"""

from __future__ import annotations

import base64
import binascii
import math
import operator
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel

from core.contracts import (
    Acknowledgement,
    Alert,
    CameraInfo,
    CameraView,
    ContractError,
    DeadLetter,
    Evidence,
    FrameMetrics,
    IncidentRecord,
    Prediction,
    Timings,
)

U16, U32, U64 = 2**16 - 1, 2**32 - 1, 2**64 - 1
HOUR_MS = 3_600_000.0


@dataclass(frozen=True)
class Limits:
    """How far from ``now`` a record's timestamps may be, s; how long its text may be, characters; how many
    evidence frames an alert may name."""

    max_future_s: float = 300.0
    max_age_s: float = 400 * 86400.0
    max_text: int = 4096
    max_items: int = 1000


# Per contract: numeric field -> (least, greatest) the store accepts; bounds are column types or sanity.
_RANGES: dict[type, dict[str, tuple[float, float]]] = {
    FrameMetrics: {
        "seq": (0, U64),
        "bytes": (0, U32),
        "width": (1, U32),
        "height": (1, U32),
        "aspect_ratio": (1e-4, 1e4),
        "brightness": (0, 255),
        "blur": (0, 1e9),
        "inference_ms": (0, HOUR_MS),
        "detections": (0, U16),
        "contrast": (0, 255),
        "saturation": (0, 255),
        "under_exposed": (0, 1),
        "over_exposed": (0, 1),
        "mean_confidence": (0, 1),
    },
    Prediction: {"seq": (0, U64), "width": (1, U32), "height": (1, U32), "batch_size": (1, U16)},
    Alert: {"window": (0, U32)},
    DeadLetter: {"partition": (0, U32), "offset": (0, U64)},
    Evidence: {"width": (1, 4096), "height": (1, 4096), "source_width": (1, U32), "source_height": (1, U32)},
    CameraView: {"width": (1, 4096), "height": (1, 4096), "source_width": (1, U32), "source_height": (1, U32)},
}
_TIMESTAMPS = {
    FrameMetrics: ("captured_at", "processed_at"),
    Prediction: ("captured_at", "processed_at"),
    Alert: ("raised_at",),
    DeadLetter: ("received_at",),
    Evidence: ("captured_at",),
    CameraView: ("captured_at",),
    IncidentRecord: ("opened_at", "changed_at"),
    CameraInfo: ("updated_at",),
    Acknowledgement: ("at",),
}
_IDENTITY = {
    FrameMetrics: "frame_id",
    Prediction: "frame_id",
    Alert: "alert_id",
    Evidence: "alert_id",
    CameraView: "camera_id",
    IncidentRecord: "event_id",
    CameraInfo: "camera_id",
    Acknowledgement: "target_id",
}
# Per contract: its text fields (str, or a list of str), but for the images and payloads, which it bounds itself
# (Evidence, CameraView) or which the dead-letter topic's message size bounds (DeadLetter), and an incident's
# cameras and alerts, as many as the fleet has (its record's size bounds them).
_UNBOUNDED = ("image_b64", "payload_b64", "cameras", "changed_alert_ids")
_TEXT = {
    kind: tuple(
        name
        for name, info in kind.model_fields.items()
        if info.annotation in (str, "str", str | None, "str | None", list[str], "list[str]") and name not in _UNBOUNDED
    )
    for kind in (
        FrameMetrics,
        Prediction,
        Alert,
        DeadLetter,
        Evidence,
        CameraView,
        IncidentRecord,
        CameraInfo,
        Acknowledgement,
    )
}
_RANGE_LIST = {kind: tuple((name, low, high) for name, (low, high) in r.items()) for kind, r in _RANGES.items()}
_FLAT_FLOATS: dict[type, tuple[str, ...]] = {}


def _flat_floats(kind: type) -> tuple[str, ...]:
    """Fields of ``kind`` that are plain floats."""
    names = tuple(name for name, info in kind.model_fields.items() if info.annotation in (float, "float"))
    _FLAT_FLOATS[kind] = names
    return names


def problems(record, now: float, limits: Limits = Limits()) -> list[tuple[str, str]]:
    """Every reason ``record`` cannot be stored, as (code, detail); empty when it can.

    Codes: ``non_finite`` (NaN or infinity anywhere), ``out_of_range`` (negative size, beyond the column
    type or beyond sanity), ``bad_timestamp`` (later than ``now + max_future_s`` or earlier than
    ``now - max_age_s``), ``inconsistent`` (fields that contradict each other), ``missing_identity``,
    ``bad_image`` (evidence that is not a base64 JPEG), ``too_long`` (text over ``max_text`` characters, or
    more than ``max_items`` evidence frames).
    """
    kind = type(record)
    found: list[tuple[str, str]] = []
    values = record.__dict__  # pydantic keeps the fields there; getattr per field is several times slower
    # NaN and infinity survive a sum, so one isfinite() clears the usual, all-finite record.
    flat = _FLAT_FLOATS.get(kind) or _flat_floats(kind)
    if not math.isfinite(sum(values[name] for name in flat)) or kind is Prediction:
        for name, value in _numbers(record):
            if not math.isfinite(value):
                found.append(("non_finite", f"{name} is {value}"))
        if found:
            return found
    for name, low, high in _RANGE_LIST.get(kind, ()):
        value = values[name]
        if not low <= value <= high:
            found.append(("out_of_range", f"{name}={value} outside [{low:g}, {high:g}]"))
    for name in _TIMESTAMPS.get(kind, ()):
        t = values[name]
        if t > now + limits.max_future_s:
            found.append(("bad_timestamp", f"{name}={t} is {t - now:.0f} s in the future"))
        elif t < now - limits.max_age_s:
            found.append(("bad_timestamp", f"{name}={t} is {(now - t) / 86400:.0f} days old"))
    identity = _IDENTITY.get(kind)
    if identity and not getattr(record, identity):
        found.append(("missing_identity", f"{identity} is empty"))
    found += _text_problems(kind, values, limits)
    if kind is FrameMetrics and record.height > 0:
        try:
            ratio = record.width / record.height
        except OverflowError:  # a width beyond any float, already out_of_range
            ratio = record.aspect_ratio
        if abs(record.aspect_ratio - ratio) > 0.01 * ratio:
            found.append(("inconsistent", f"aspect_ratio {record.aspect_ratio} but width/height is {ratio:.4f}"))
    if kind is Prediction:
        found += _prediction_problems(record, limits)
    if kind in (Evidence, CameraView) and (why := _image_problem(record.image_b64)) is not None:
        found.append(("bad_image", why))
    return found


def _text_problems(kind: type, values: dict, limits: Limits) -> list[tuple[str, str]]:
    found = []
    for name in _TEXT.get(kind, ()):
        value = values[name]
        if value is None:
            continue
        if isinstance(value, list):
            if len(value) > limits.max_items:
                found.append(("too_long", f"{name} has {len(value)} items, at most {limits.max_items}"))
            longest = max(map(len, value), default=0)
        else:
            longest = len(value)
        if longest > limits.max_text:
            found.append(("too_long", f"{name} is {longest} characters long, at most {limits.max_text}"))
    return found


def _longest(texts: Sequence[str | None]) -> int:
    """The length of the longest of ``texts`` (None counts as empty)."""
    try:
        return max(map(len, texts))  # in C: the usual column, without a None
    except TypeError:
        return max(len(t or "") for t in texts)


def _too_long(value, limits: Limits) -> bool:
    """Whether :func:`_text_problems` refuses ``value`` (a text field's, or a list of texts)."""
    if isinstance(value, list):
        return len(value) > limits.max_items or max(map(len, value), default=0) > limits.max_text
    return value is not None and len(value) > limits.max_text


def check(record, now: float, limits: Limits = Limits()):
    """``record`` if it can be stored; otherwise :class:`ContractError` with the first code and every detail."""
    found = problems(record, now, limits)
    if found:
        raise ContractError(found[0][0], "; ".join(detail for _, detail in found))
    return record


def _prediction_problems(p: Prediction, limits: Limits = Limits()) -> list[tuple[str, str]]:
    found = []
    longest = max((len(d.label) for d in p.detections), default=0)
    if longest > limits.max_text:
        found.append(("too_long", f"a detection's label is {longest} characters long, at most {limits.max_text}"))
    if len(p.detections) > U16:
        found.append(("out_of_range", f"{len(p.detections)} detections, at most {U16}"))
    timings = p.timings.model_dump()
    for name, value in timings.items():
        if value > HOUR_MS:
            found.append(("out_of_range", f"timings.{name}={value} ms is over an hour"))
    slack = 1.0  # px: boxes are clipped to the frame by the detector, rounding may overshoot
    try:
        right, bottom = p.width + slack, p.height + slack
    except OverflowError:  # a size beyond any float, already out_of_range: no box can be placed in it
        return found
    for i, d in enumerate(p.detections):
        x1, y1, x2, y2 = d.box
        if not (-slack <= x1 <= x2 <= right and -slack <= y1 <= y2 <= bottom):
            found.append(("out_of_range", f"detections[{i}].box {d.box} not inside {p.width}x{p.height}"))
            break
        if d.class_id > U16:
            found.append(("out_of_range", f"detections[{i}].class_id={d.class_id}"))
            break
    return found


def ranges(kind: type) -> dict[str, tuple[float, float]]:
    """Numeric field of ``kind`` -> (least, greatest) the store accepts, for a decoder that checks while parsing."""
    return dict(_RANGES.get(kind, {}))


def suspects(
    kind: type,
    column: Callable[[str], Sequence],
    now: float,
    limits: Limits = Limits(),
    in_range: Collection[str] = (),
) -> set[int]:
    """Positions, in a batch of ``kind`` records, of those :func:`problems` might refuse; it accepts the others.

    ``column(name)`` gives field ``name`` (dotted inside a nested model: ``timings.queue_ms``) of every record
    of the batch, in order. Each test of :func:`problems` runs on a whole column (``sum``, ``min``, ``max``,
    ``all`` in C; numpy for the aspect ratio), and a column that fails one is looked at row by row. The set may
    hold rows that turn out fine; it never misses one that is not: the writer re-checks each with :func:`check`,
    which gives the codes and details. ``in_range``: fields whose :func:`ranges` every record is known to hold
    (the writer's decoder checked them), not scanned again.
    """
    found: set[int] = set()

    def scan(values: Sequence, bad: Callable) -> None:
        found.update(i for i, v in enumerate(values) if bad(v))

    for name in _FLAT_FLOATS.get(kind) or _flat_floats(kind):
        values = column(name)
        if not math.isfinite(sum(values)):  # NaN and infinity survive a sum (an overflow only adds suspects)
            scan(values, _not_finite)
    for name, low, high in _RANGE_LIST.get(kind, ()):
        if name in in_range:
            continue
        values = column(name)
        # min() and max() skip a NaN unless it comes first, and then fail the test: NaN is caught either way
        if values and not (low <= min(values) and max(values) <= high):
            scan(values, lambda v, low=low, high=high: not low <= v <= high)
    latest, earliest = now + limits.max_future_s, now - limits.max_age_s
    for name in _TIMESTAMPS.get(kind, ()):
        values = column(name)
        # written as the range test above, so that a NaN first in the column (min and max then give NaN) scans it
        if values and not (earliest <= min(values) and max(values) <= latest):
            scan(values, lambda t: t > latest or t < earliest)
    identity = _IDENTITY.get(kind)
    if identity and not all(values := column(identity)):
        scan(values, operator.not_)
    for name in _TEXT.get(kind, ()):
        values = column(name)
        if values and (isinstance(values[0], list) or _longest(values) > limits.max_text):
            scan(values, lambda v: _too_long(v, limits))
    if kind is FrameMetrics:
        found |= _ratio_suspects(column("width"), column("height"), column("aspect_ratio"))
    elif kind is Prediction:
        found |= _prediction_suspects(column, limits)
    elif kind in (Evidence, CameraView):  # rare records: each image is checked
        scan(column("image_b64"), lambda b: _image_problem(b) is not None)
    return found


def _image_problem(image_b64: str) -> str | None:
    """Why ``image_b64`` is not a base64 JPEG, or None."""
    try:
        image = base64.b64decode(image_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        return f"image_b64 is not base64: {exc}"
    if not image.startswith(b"\xff\xd8"):
        return "image_b64 is not a JPEG"
    return None


def _not_finite(value) -> bool:
    return not math.isfinite(value)


def _ratio_suspects(width: Sequence, height: Sequence, aspect_ratio: Sequence) -> set[int]:
    """Rows whose aspect ratio may contradict width / height: the test of :func:`problems`, in numpy. Sizes
    below 2**53 convert to float exactly, so the division and comparison are those of Python; larger ones are
    out of range and suspects already."""
    n = len(width)
    try:
        w = np.fromiter(width, np.float64, n)
        h = np.fromiter(height, np.float64, n)
    except OverflowError:  # a size beyond any float: let problems() look at every row
        return set(range(n))
    a = np.fromiter(aspect_ratio, np.float64, n)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = w / h
        bad = (h > 0) & ~(np.abs(a - ratio) <= 0.01 * ratio)
    return set(np.flatnonzero(bad).tolist())


_TIMING_FIELDS = tuple(Timings.model_fields)


def _prediction_suspects(column: Callable[[str], Sequence], limits: Limits = Limits()) -> set[int]:
    """Rows of a prediction batch that :func:`_prediction_problems` (or a non-finite nested number) may refuse.
    The detections of the whole batch are checked at once in numpy, with the comparisons of
    :func:`_prediction_problems` (``width + 1.0`` is the same float in both)."""
    found: set[int] = set()
    for name in _TIMING_FIELDS:
        values = column(f"timings.{name}")
        if not (math.isfinite(sum(values)) and max(values, default=0.0) <= HOUR_MS):
            found.update(i for i, v in enumerate(values) if not (math.isfinite(v) and v <= HOUR_MS))
    dets = column("detections")
    counts = list(map(len, dets))
    found.update(i for i, n in enumerate(counts) if n > U16)
    flat = [d for row in dets for d in row]
    if not flat:
        return found
    if max(len(d.label) for d in flat) > limits.max_text:
        found.update(i for i, row in enumerate(dets) if any(len(d.label) > limits.max_text for d in row))
    try:
        box = np.array(list(map(_BOX, flat)), np.float64).reshape(len(flat), 4)
        score = np.fromiter(map(_SCORE, flat), np.float64, len(flat))
        class_id = np.fromiter(map(_CLASS_ID, flat), np.int64, len(flat))
        right = np.repeat(np.fromiter(column("width"), np.float64, len(dets)), counts) + 1.0
        bottom = np.repeat(np.fromiter(column("height"), np.float64, len(dets)), counts) + 1.0
    except (OverflowError, ValueError, TypeError):  # a number beyond float or int64: problems() decides
        return found | {i for i, n in enumerate(counts) if n}
    x1, y1, x2, y2 = box.T
    with np.errstate(invalid="ignore", over="ignore"):
        fine = (
            (x1 >= -1.0) & (x1 <= x2) & (x2 <= right) & (y1 >= -1.0) & (y1 <= y2) & (y2 <= bottom)
            & (class_id <= U16) & np.isfinite(score + x1 + y1 + x2 + y2)
        )  # fmt: skip
    if not fine.all():
        found.update(np.unique(np.repeat(np.arange(len(dets)), counts)[~fine]).tolist())
    return found


_BOX, _SCORE, _CLASS_ID = operator.attrgetter("box"), operator.attrgetter("score"), operator.attrgetter("class_id")


def _numbers(record, prefix: str = ""):
    """(dotted name, value) of every float in ``record``, nested models and lists included."""
    kind = type(record)
    names = _FLOAT_FIELDS.get(kind)
    if names is None:
        names = _FLOAT_FIELDS[kind] = tuple(_float_fields(kind))
    for name in names:
        value = getattr(record, name)
        path = f"{prefix}{name}"
        if isinstance(value, float):
            yield path, value
        elif isinstance(value, tuple | list):
            for i, item in enumerate(value):
                if isinstance(item, float):
                    yield f"{path}[{i}]", item
                elif isinstance(item, BaseModel):
                    yield from _numbers(item, f"{path}[{i}].")
        elif isinstance(value, BaseModel):
            yield from _numbers(value, f"{path}.")


_FLOAT_FIELDS: dict[type, tuple[str, ...]] = {}


def _float_fields(kind: type):
    """Fields of ``kind`` that can hold a float: floats, and models or sequences that may contain them."""
    for name, info in kind.model_fields.items():
        text = str(info.annotation)
        if (
            "float" in text
            or "tuple" in text
            or "list" in text
            or (isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel))
        ):
            yield name
