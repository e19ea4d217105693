"""The writer's fast path (msgspec structs derived from the contracts, checks column by column, columns built
straight from the structs) reaches the verdicts of the contract path record by record: the same rows, and the
same dead letters with the same reasons and details, whatever the records hold."""

from __future__ import annotations

import asyncio
import json
import math
from collections import defaultdict

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.contracts import (
    Alert,
    CameraView,
    ContractError,
    DeadLetter,
    Detection,
    Evidence,
    FrameHeader,
    FrameMetrics,
    Prediction,
    Timings,
    encode_record,
)
from store.tables import Fields, ts_column
from store.validate import Limits, check, problems, suspects
from store.writer import _FAST, SINKS, StoreWriter, _decode, fast_decoder
from tests.store.records import LIMITS, SETTINGS, T0, Record, alert, metrics, prediction, records_of

# Derandomized: CI runs the same examples every time; raise max_examples locally to explore more.
FUZZ = settings(max_examples=300, deadline=None, derandomize=True)
STRICT = Limits()  # 300 s ahead, 400 days back: the production limits, so that timestamps can fail too


def evidence(n: int = 0, **changes) -> Evidence:
    fields = dict(alert_id=f"a{n}", camera_id="cam-1", frame_id=f"cam-1:0:{n}", captured_at=T0, width=320,
                  height=180, source_width=1280, source_height=720, image_b64="/9j/2w==")  # fmt: skip
    fields.update(changes)
    return Evidence(**fields)


def view(n: int = 0, **changes) -> CameraView:
    fields = dict(camera_id="cam-1", role="latest", frame_id=f"cam-1:0:{n}", captured_at=T0, width=320, height=180,
                  source_width=1280, source_height=720, image_b64="/9j/2w==")  # fmt: skip
    fields.update(changes)
    return CameraView(**fields)


def dead_letter(n: int = 0, **changes) -> DeadLetter:
    fields = dict(source_topic="w.frames", partition=0, offset=n, key="cam-1", reason="corrupt_image",
                  detail="not a JPEG", payload_b64="AAAA", received_at=T0)  # fmt: skip
    fields.update(changes)
    return DeadLetter(**fields)


def reference(w: StoreWriter, records: list[Record], now: float) -> tuple[dict, list[DeadLetter]]:
    """The writer's previous to_rows, record by record: the contract, the store check, the sink's row."""
    rows: dict[str, list[tuple]] = defaultdict(list)
    dead = []
    for r in records:
        sink = w.topics[r.topic]
        try:
            rows[sink.table].append(sink.row(check(_decode(sink.contract, r.value), now, w.limits)))
        except ContractError as exc:
            if sink.contract is not DeadLetter:  # a bad dead letter is logged and skipped, never dead-lettered
                dead.append(DeadLetter.of(r.topic, r.partition, r.offset, r.key, r.value, exc))
    return {table: table_rows for table, table_rows in rows.items() if table_rows}, dead


def letters(dead: list[DeadLetter]) -> list[dict]:
    return [d.model_dump(exclude={"received_at"}) for d in dead]


def assert_same_as_reference(w: StoreWriter, records: list[Record], now: float = T0) -> tuple[dict, list]:
    rows, dead = w.to_rows(records, now=now)
    want_rows, want_dead = reference(w, records, now)
    assert rows == want_rows
    assert letters(dead) == letters(want_dead)
    return rows, dead


# --- the decoder


def test_every_sink_that_declares_a_fast_path_has_a_fast_decoder():
    assert all((_FAST[sink.contract] is not None) == sink.fast_path for sink in SINKS.values())
    assert {sink.table for sink in SINKS.values() if not sink.fast_path} == {
        "incidents",
        "camera_inventory",
        "acknowledgements",
    }


def test_a_contract_msgspec_cannot_mirror_has_no_fast_decoder():
    assert fast_decoder(FrameHeader) is None  # a regex pattern: pydantic's and Python's may differ


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400"])
def test_msgspec_refuses_what_would_not_be_finite(token):
    """The fast path relies on it: a non-finite number only ever arrives through the contract's path."""
    value = encode_record(alert()).replace(b'"value":3.0', b'"value":' + token)
    with pytest.raises(msgspec.DecodeError):
        _FAST[Alert].decode(value)
    assert _decode(Alert, value).value in (math.inf, -math.inf) or math.isnan(_decode(Alert, value).value)


def test_a_record_without_schema_version_takes_the_contract_path():
    raw = json.loads(encode_record(metrics()))
    del raw["schema_version"]
    value = json.dumps(raw).encode()
    with pytest.raises(msgspec.ValidationError):
        _FAST[FrameMetrics].decode(value)
    w = StoreWriter(SETTINGS, None, LIMITS)
    _, dead = assert_same_as_reference(w, records_of("metrics", [value]))
    assert [d.reason for d in dead] == ["unknown_schema_version"]


def test_numbers_spelled_differently_are_stored_as_the_contract_reads_them():
    raw = json.loads(encode_record(metrics(seq=7)))
    raw["seq"], raw["brightness"], raw["black"] = 7.0, 100, 0  # pydantic's lax mode: 7, 100.0, False
    w = StoreWriter(SETTINGS, None, LIMITS)
    rows, dead = assert_same_as_reference(w, records_of("metrics", [json.dumps(raw).encode(), metrics(seq=8)]))
    assert not dead and [r[2] for r in rows["frame_metrics"]] == [7, 8]


# --- timestamps


@given(st.lists(st.floats(0, 4e9) | st.sampled_from([0.0005, 0.0015, 0.0025, 1.7e9 + 0.0005, 1.7e9 + 0.0015])))
def test_timestamps_are_stored_as_milliseconds_rounded_half_to_even(values):
    assert ts_column(values) == [round(v * 1000) for v in values]


# --- a bad record among good ones


def test_a_bad_record_among_good_ones_is_rejected_with_its_reason_and_the_good_ones_are_stored(store):
    w = StoreWriter(SETTINGS, store, LIMITS)
    nan = json.loads(encode_record(metrics(seq=104)))
    nan["blur"] = float("nan")
    batch = [
        metrics(seq=0),
        metrics(seq=101, aspect_ratio=1.0),  # inconsistent
        metrics(seq=1),
        metrics(seq=103, detections=70_000),  # out_of_range: does not fit UInt16
        json.dumps(nan).encode(),  # bad_record: the contract wants blur >= 0
        metrics(seq=2),
        metrics(seq=106, frame_id=""),  # missing_identity
        metrics(seq=107, captured_at=T0 + 20 * 365 * 86400),  # bad_timestamp
        metrics(seq=3),
    ]
    good = [m for m in batch if isinstance(m, FrameMetrics) and m.seq < 100]
    records = records_of("metrics", batch, partitions=1)
    tables, dead = w.to_columns(records, now=T0)
    assert [(d.offset, d.reason) for d in dead] == [
        (1, "inconsistent"), (3, "out_of_range"), (4, "bad_record"), (6, "missing_identity"), (7, "bad_timestamp"),
    ]  # fmt: skip
    assert "detections=70000" in dead[1].detail and dead[2].payload() == records[4].value
    assert letters(dead) == letters(reference(w, records, T0)[1])
    assert asyncio.run(w.insert(tables, asyncio.Event(), w.tokens(records, dead)))
    stored = store.query("SELECT seq FROM frame_metrics ORDER BY seq")
    assert [s for (s,) in stored] == [g.seq for g in good]


def test_bad_predictions_and_alerts_among_good_ones(store):
    w = StoreWriter(SETTINGS, store, LIMITS)
    outside = Detection(label="car", class_id=2, score=0.9, box=(600, 10, 900, 30))
    wide = json.loads(encode_record(prediction(seq=3)))
    wide["width"] = 10**400  # used to overflow float() in the box check and stop the writer
    records = records_of(
        "predictions",
        [prediction(seq=0), prediction(seq=1, detections=[outside]), prediction(seq=2, labels=("a", "b")),
         json.dumps(wide).encode(), prediction(seq=4, timings=Timings(queue_ms=5e6, decode_ms=1, preprocess_ms=1,
                                                                      inference_ms=1, postprocess_ms=1))],
        partitions=1,
    )  # fmt: skip
    records += records_of("alerts", [alert(n=0), alert(n=1, window=2**40), alert(n=2, alert_id="")], partitions=1)
    rows, dead = assert_same_as_reference(w, records)
    assert [(d.source_topic, d.offset, d.reason) for d in dead] == [
        ("w.predictions", 1, "out_of_range"), ("w.predictions", 3, "out_of_range"),
        ("w.predictions", 4, "out_of_range"), ("w.alerts", 1, "out_of_range"), ("w.alerts", 2, "missing_identity"),
    ]  # fmt: skip
    assert [r[2] for r in rows["predictions"]] == [0, 2] and [r[0] for r in rows["alerts"]] == ["cam-1-a0"]
    tables, _ = w.to_columns(records, now=T0)
    assert asyncio.run(w.insert(tables, asyncio.Event(), w.tokens(records, dead)))
    assert store.query("SELECT count() FROM detections FINAL") == [(3,)]  # 1 + 2 kept detections


VALID = {
    "metrics": json.loads(encode_record(metrics())),
    "predictions": json.loads(encode_record(prediction(labels=("person", "car")))),
    "alerts": json.loads(encode_record(alert())),
    "deadletters": json.loads(encode_record(dead_letter())),
    "evidence": json.loads(encode_record(evidence())),
    "views": json.loads(encode_record(view())),
}
PATHS = {
    topic: [*raw, "extra", *(["timings.queue_ms", "timings.inference_ms", "timings.extra", "detections.0.box",
                              "detections.1.score", "detections.0.class_id", "detections.1.label",
                              "detections.0.extra"] if topic == "predictions" else [])]
    for topic, raw in VALID.items()
}  # fmt: skip
RATIO = 640 / 360
DETECTIONS = st.fixed_dictionaries(
    {
        "label": st.just("x"),
        "class_id": st.integers(0, 2**17),
        "score": st.floats(0, 1),
        "box": st.lists(st.floats(-2, 700), min_size=4, max_size=4),
    }
)
# --- at every bound: the values just inside and just outside each limit of the contracts and the store


def _around(bound, integer: bool) -> list:
    if integer:
        return [int(bound) - 1, int(bound), int(bound) + 1]
    return [math.nextafter(float(bound), -math.inf), float(bound), math.nextafter(float(bound), math.inf)]


def _bounded_fields(model, prefix: str = ""):
    """(dotted path, values around each bound) of every constrained field of ``model`` and its nested models."""
    for name, info in model.model_fields.items():
        integer = info.annotation is int
        for m in info.metadata:
            for bound in (getattr(m, key, None) for key in ("gt", "ge", "lt", "le")):
                if bound is not None:
                    yield f"{prefix}{name}", _around(bound, integer)
    if model is Prediction:
        yield from _bounded_fields(Timings, "timings.")
        yield from _bounded_fields(Detection, "detections.0.")


def boundary_cases() -> list[tuple[str, str, object]]:
    from store.validate import _RANGES, _TIMESTAMPS, HOUR_MS, U16

    topic_of = {s.contract: name for name, s in SINKS.items() if s.fast_path}  # the others take one path only
    cases = []
    for kind, topic in topic_of.items():
        for path, values in _bounded_fields(kind):
            cases += [(topic, path, v) for v in values]
        for name, (low, high) in _RANGES.get(kind, {}).items():
            integer = kind.model_fields[name].annotation is int
            cases += [(topic, name, v) for bound in (low, high) for v in _around(bound, integer)]
        for name in _TIMESTAMPS.get(kind, ()):
            for t in (T0 + STRICT.max_future_s, T0 - STRICT.max_age_s):
                cases += [(topic, name, v) for v in _around(t, False)]
    for factor in (1.01, 0.99):  # |aspect_ratio - w/h| against 1 % of w/h
        cases += [("metrics", "aspect_ratio", v) for v in _around(RATIO * factor, False)]
        cases += [("metrics", "aspect_ratio", RATIO + (RATIO * 0.01 if factor > 1 else -RATIO * 0.01))]
    for name in Timings.model_fields:
        cases += [("predictions", f"timings.{name}", v) for v in _around(HOUR_MS, False)]
    for i, edge in enumerate((-1.0, -1.0, 641.0, 361.0)):  # 1 px of slack around a 640 x 360 frame
        for v in _around(edge, False):
            box = [10.0, 10.0, 20.0, 30.0]
            box[i] = v
            cases.append(("predictions", "detections.0.box", box))
    cases += [("predictions", "detections.0.box", [30.0, 10.0, 20.0, 30.0])]  # x1 > x2
    cases += [("predictions", "detections.0.class_id", v) for v in _around(U16, True)]
    cases += [("metrics", "frame_diff", None), ("metrics", "embedding", [float(U16), -1.0])]
    sample = {"detector": "ks_holm", "signal": "blur_distribution", "statistic": 0.5, "threshold": 1e-3, "drift": False}
    cases += [("metrics", "drift", [{**sample, "window": w}]) for w in _around(2**32 - 1, True)]
    cases += [("metrics", "drift", [{**sample, "statistic": v}]) for v in _around(1e12, False)]
    cases += [("metrics", "drift", [{**sample, "detector": ""}]), ("metrics", "outlier_score", -0.5)]
    cases += [("views", "role", "sideways"), ("views", "camera_id", ""), ("views", "image_b64", "not base64")]
    return cases


@pytest.mark.parametrize(("topic", "path", "value"), boundary_cases())
def test_at_every_bound_the_fast_path_says_what_the_contract_path_says(topic, path, value):
    raw = json.loads(json.dumps(VALID[topic]))
    node = raw
    *parents, field = path.split(".")
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[field] = value
    good = json.dumps(VALID[topic]).encode()
    records = [Record(SETTINGS.topic(topic), 0, i, b"cam", v) for i, v in enumerate([good, json.dumps(raw).encode()])]
    assert_same_as_reference(StoreWriter(SETTINGS, None, STRICT), records)


def test_more_detections_than_the_column_holds():
    many = prediction(detections=[Detection(label="car", class_id=2, score=0.9, box=(10, 10, 20, 30))] * (2**16 + 1))
    w = StoreWriter(SETTINGS, None, STRICT)
    _, dead = assert_same_as_reference(w, records_of("predictions", [prediction(), many], partitions=1))
    assert [(d.offset, d.reason) for d in dead] == [(1, "out_of_range")]


# --- fuzzing: whatever the records hold, the fast path says what the contract path says

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, -1, 70_000, 2**16, 2**32, 2**63, 2**64, 10**400, 7.0, -0.0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-2, 1000),
    st.sampled_from([T0 + 299, T0 + 301, T0 - 400 * 86400 + 1, T0 - 400 * 86400 - 1, 3_600_001.0, 5e6]),
    st.sampled_from([RATIO * 1.0099, RATIO * 1.0101, RATIO * 0.9901, RATIO * 0.9899]),
    st.text(max_size=4),
    st.sampled_from(["", "jpeg", "gif", "raised", "data_drift", "1", "1.5"]),
    st.lists(st.floats(-2, 700), max_size=5),
    DETECTIONS,
)


def mutated(topic: str, data) -> bytes:
    raw = json.loads(json.dumps(VALID[topic]))
    for _ in range(data.draw(st.integers(0, 3))):
        path = data.draw(st.sampled_from(PATHS[topic])).split(".")
        node = raw
        for part in path[:-1]:  # down to the field's object, if the earlier mutations left one there
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict) and not part.isdigit():
                node = node.get(part)
            else:
                node = None
        if not isinstance(node, dict):
            continue
        if data.draw(st.booleans()) and path[-1] != "received_at":  # it would default to two different clocks
            node.pop(path[-1], None)
        else:
            node[path[-1]] = data.draw(VALUES)
    value = json.dumps(raw).encode()  # NaN and Infinity written as Python writes them
    return data.draw(st.sampled_from([value, value, value, value, value[:-3], b"[1, 2]", b"\xff" + value]))


@FUZZ
@given(st.data())
def test_any_batch_gives_the_rows_and_dead_letters_of_the_contract_path(data):
    records = []
    for i in range(data.draw(st.integers(1, 12))):
        topic = data.draw(st.sampled_from(list(VALID)))
        records.append(Record(SETTINGS.topic(topic), i % 2, i, b"cam", mutated(topic, data)))
    assert_same_as_reference(StoreWriter(SETTINGS, None, STRICT), records)


KINDS = {
    FrameMetrics: metrics(),
    Prediction: prediction(labels=("person", "car")),
    Alert: alert(),
    DeadLetter: dead_letter(),
}
NUMBERS = {
    int: st.one_of(st.integers(-5, 2**16 + 5), st.sampled_from([2**32, 2**32 - 1, 2**64, 2**64 - 1, 10**400])),
    float: st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.floats(-2, 700),
        st.sampled_from([T0 + 301, T0 - 401 * 86400, RATIO * 1.0101, 3_600_001.0]),
    ),
    str: st.sampled_from(["", "x"]),
}


@st.composite
def odd_record(draw, kind: type):
    """A record of ``kind`` with some fields set to anything of their type, unchecked (model_copy does not
    validate): what :func:`suspects` must never wave through if :func:`problems` would refuse it."""
    base = KINDS[kind]
    changes = {}
    for name, info in kind.model_fields.items():
        if info.annotation in NUMBERS and draw(st.integers(0, 4)) == 0:
            changes[name] = draw(NUMBERS[info.annotation])
    if kind is Prediction and draw(st.booleans()):
        box = draw(st.lists(NUMBERS[float], min_size=4, max_size=4))
        changes["detections"] = [Detection.model_construct(label="x", class_id=draw(NUMBERS[int]),
                                                           score=draw(NUMBERS[float]), box=tuple(box))]  # fmt: skip
        changes["timings"] = Timings.model_construct(**{t: draw(NUMBERS[float]) for t in Timings.model_fields})
    return base.model_copy(update=changes)


@FUZZ
@given(st.data())
def test_suspects_never_miss_a_record_problems_would_refuse(data):
    kind = data.draw(st.sampled_from(list(KINDS)))
    batch = data.draw(st.lists(odd_record(kind), min_size=1, max_size=6))
    named = suspects(kind, Fields(batch).__getitem__, T0, STRICT)
    for i, record in enumerate(batch):
        if i not in named:
            assert problems(record, T0, STRICT) == [], record
