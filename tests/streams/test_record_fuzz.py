"""Hostile records: whatever a topic's value holds, :func:`decode_record` answers with the record or a
:class:`ContractError` with a known reason, never another exception (which would stop the consumer)."""

from __future__ import annotations

import doctest
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import contracts, skips
from core.contracts import (
    Alert,
    CameraConfig,
    CameraView,
    ContractError,
    DeadLetter,
    Evidence,
    Feedback,
    MonitorOverrides,
    TrueObject,
    WorkerStatus,
    decode_record,
    encode_record,
)
from tests.store.records import alert, metrics, prediction

# Derandomized: CI runs the same examples every time; raise max_examples locally to explore more.
FUZZ = settings(max_examples=400, deadline=None, derandomize=True)
REASONS = {"empty_message", "bad_json", "too_deep", "number_too_large", "bad_record", "unknown_schema_version",
           "non_finite"}  # fmt: skip

VALID = [
    alert(),
    metrics(),
    prediction(),
    Evidence(alert_id="a", camera_id="c", frame_id="f", captured_at=1e9, width=1, height=1, source_width=1,
             source_height=1, image_b64="/9j/2w=="),
    CameraView(camera_id="c", role="latest", frame_id="f", captured_at=1e9, width=1, height=1, source_width=1,
               source_height=1, image_b64="/9j/2w=="),
    DeadLetter.of("frames", 0, 1, b"cam", b"payload", ContractError("corrupt_image", "x")),
    WorkerStatus(worker_id="w", model_name="m", model_version="1", providers=[], batch_max_size=8, partitions=[0],
                 frames_per_s=1.0, mean_batch=1.0, dead_letters=0, alerts=0, sent_at=1e9),
    CameraConfig(scope="fleet", overrides=MonitorOverrides(expected_fps=5.0)),
    Feedback(frame_id="f", camera_id="c", objects=[TrueObject(label="person", box=(1, 2, 3, 4))]),
]  # fmt: skip
MODELS = [type(r) for r in VALID]
FIELDS = {type(r): sorted(json.loads(encode_record(r))) for r in VALID}

# Values that have stopped a consumer, or could: each spliced into a valid record in place of a field.
HOSTILE = [
    "[" * 50_000 + "]" * 50_000,  # RecursionError in json.loads and msgspec
    '{"a":' * 3000 + "1" + "}" * 3000,
    "1" * 5000,  # ValueError: int max_str_digits
    "-" + "9" * 4301,
    "1" * 4000,  # an int that converts, beyond any column
    "NaN", "Infinity", "-Infinity", "1e400", "-1e999", "1" * 400 + ".5",
    '"\\ud800"', '"\\udfff\\ud800"', '["ok", {"\\udc00": 1}]',
    "null", "true", "[]", "{}", '""', '"' + "x" * 300_000 + '"',
    "18446744073709551616", "-1", "0.0", "1e-400",
]  # fmt: skip
WHOLE = [
    None, b"", b"\xff\xfe\xfd", b"\xc3\x28", b"\xed\xa0\x80", b"null", b"[1, 2]", b"42", b'"text"', b"true",
    b"{", b'{"schema_version": 1', b"{}" * 100, b"\x00" * 50, b"[" * 200_000, b'{"schema_version": 1}',
    b'{"schema_version": "1"}', b'{"schema_version": 1.0}', b'{"schema_version": true}', b'{"schema_version": NaN}',
    b'{"schema_version": ' + b"1" * 5000 + b"}", '{"schema_version": 1}'.encode("utf-16"), "\ud800",
]  # fmt: skip


def outcome(model, value) -> str:
    try:
        record = decode_record(model, value)
    except ContractError as exc:
        assert exc.reason in REASONS, exc.reason
        assert exc.detail and len(exc.detail) < 5000  # a message for people, not the payload again
        return exc.reason
    assert isinstance(record, model)
    return "ok"


def splice(record, field: str, token: str) -> bytes:
    """``record``'s JSON with ``field``'s value replaced by the raw JSON text ``token``."""
    raw = json.loads(encode_record(record))
    raw[field] = "\x00marker\x00"
    return json.dumps(raw).replace('"\\u0000marker\\u0000"', token).encode()


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("value", WHOLE, ids=range(len(WHOLE)))
def test_whole_values_that_are_not_records(model, value):
    assert outcome(model, value) != "ok"


@pytest.mark.parametrize("record", VALID, ids=lambda r: type(r).__name__)
@pytest.mark.parametrize("token", HOSTILE, ids=lambda t: t[:12])
def test_a_hostile_value_in_any_field_is_a_contract_error_or_a_record(record, token):
    for field in [*FIELDS[type(record)], "extra"]:
        outcome(type(record), splice(record, field, token))


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("[" * 50_000 + "]" * 50_000, "too_deep"),
        ("1" * 5000, "number_too_large"),
        ("NaN", "non_finite"),
        ("-Infinity", "non_finite"),
        ("1e400", "non_finite"),
        ('"\\ud800"', "bad_json"),
        ("[1]", "bad_record"),
    ],
)
def test_the_reason_names_what_is_wrong(token, reason):
    assert outcome(Alert, splice(alert(), "value", token)) == reason


def test_a_paired_surrogate_escape_is_text_and_a_lone_one_is_not():
    assert decode_record(Alert, splice(alert(), "message", '"\\ud83d\\ude00"')).message == "\U0001f600"
    assert outcome(Alert, splice(alert(), "message", '"\\\\ud800"')) == "ok"  # an escaped backslash, then text


def test_valid_records_still_decode():
    for record in VALID:
        assert decode_record(type(record), encode_record(record)) == record


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


@FUZZ
@given(st.sampled_from(MODELS), st.binary(max_size=2048))
def test_arbitrary_bytes(model, value):
    outcome(model, value)


@FUZZ
@given(st.sampled_from(VALID), st.data())
def test_any_json_in_any_field(record, data):
    field = data.draw(st.sampled_from([*FIELDS[type(record)], "extra"]))
    value = data.draw(json_values | st.sampled_from(HOSTILE))
    token = value if isinstance(value, str) and value in HOSTILE else json.dumps(value)
    outcome(type(record), splice(record, field, token))


@FUZZ
@given(st.sampled_from(VALID), st.lists(st.tuples(st.integers(0, 10**6), st.binary(min_size=1, max_size=8)),
                                        min_size=1, max_size=6))  # fmt: skip
def test_bytes_spliced_anywhere_in_a_record(record, edits):
    value = bytearray(encode_record(record))
    for position, chunk in edits:
        at = position % (len(value) + 1)
        value[at:at] = chunk
    outcome(type(record), bytes(value))


@FUZZ
@given(st.sampled_from(MODELS), json_values)
def test_any_json_document(model, value):
    outcome(model, json.dumps(value).encode())


@pytest.mark.parametrize("module", [contracts, skips], ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
