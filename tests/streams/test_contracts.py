import json
import struct

import pytest

from core.contracts import (
    Alert,
    ContractError,
    DeadLetter,
    FrameHeader,
    FrameMetrics,
    Prediction,
    decode_record,
    encode_record,
    pack_frame,
    unpack_frame,
)


def header(**kw) -> FrameHeader:
    base = dict(frame_id="cam-1:1:0", camera_id="cam-1", seq=0, captured_at=1.7e9, width=64, height=48)
    return FrameHeader(**{**base, **kw})


def test_frame_round_trip_keeps_header_and_image():
    h = header(seq=7)
    frame = unpack_frame(pack_frame(h, b"\xff\xd8image"))
    assert frame.header == h
    assert frame.image == b"\xff\xd8image"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "empty_message"),
        (None, "empty_message"),
        (b"JUNKJUNKJUNK", "bad_magic"),
        (b"CVF1\x00", "truncated"),
        (b"CVF1" + struct.pack(">I", 500) + b"{}", "truncated"),
        (b"CVF1" + struct.pack(">I", 3) + b"{{{", "bad_header"),
        (b"CVF1" + struct.pack(">I", 2) + b"[]", "bad_header"),
    ],
)
def test_malformed_frames_are_rejected_with_a_reason(value, reason):
    with pytest.raises(ContractError) as err:
        unpack_frame(value)
    assert err.value.reason == reason


def _raw_frame(fields: dict, image: bytes = b"x") -> bytes:
    head = json.dumps(fields).encode()
    return b"CVF1" + struct.pack(">I", len(head)) + head + image


def test_unknown_schema_version_is_named():
    fields = json.loads(header().model_dump_json()) | {"schema_version": 99}
    with pytest.raises(ContractError) as err:
        unpack_frame(_raw_frame(fields))
    assert err.value.reason == "unknown_schema_version"
    assert "99" in err.value.detail


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"camera_id": ""}, "camera_id"),
        ({"camera_id": "cam 1/../x"}, "camera_id"),
        ({"width": -4}, "width"),
        ({"seq": "seven"}, "seq"),
        ({"encoding": "gif"}, "encoding"),
        ({"surprise": 1}, "surprise"),
        ({"seq": 2**70}, "seq"),  # beyond a 64-bit column
        ({"seq": 2**63}, "seq"),
        ({"captured_at": 1e300}, "captured_at"),
        ({"captured_at": 4_102_444_800}, "captured_at"),  # 2100
        ({"captured_at": 0}, "captured_at"),
        ({"height": 100_001}, "height"),
    ],
)
def test_header_fields_are_validated(change, field):
    fields = json.loads(header().model_dump_json()) | change
    with pytest.raises(ContractError) as err:
        unpack_frame(_raw_frame(fields))
    assert err.value.reason == "bad_header"
    assert field in err.value.detail


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity"])
def test_a_capture_time_that_is_no_number_is_refused(text):
    head = header().model_dump_json().replace('"captured_at":1700000000.0', f'"captured_at":{text}').encode()
    assert text.encode() in head
    with pytest.raises(ContractError) as err:
        unpack_frame(b"CVF1" + struct.pack(">I", len(head)) + head + b"x")
    assert err.value.reason == "bad_header"


def test_the_largest_seq_and_latest_capture_time_allowed_are_accepted():
    h = header(seq=2**63 - 1, captured_at=4_102_444_799.5)
    assert unpack_frame(pack_frame(h, b"x")).header == h


def test_missing_field_is_named():
    fields = json.loads(header().model_dump_json())
    del fields["captured_at"]
    with pytest.raises(ContractError, match="captured_at"):
        unpack_frame(_raw_frame(fields))


def test_frame_without_image_bytes_is_rejected():
    with pytest.raises(ContractError) as err:
        unpack_frame(pack_frame(header(), b""))
    assert err.value.reason == "empty_image"


def test_records_round_trip():
    m = FrameMetrics(
        frame_id="f", camera_id="c", seq=1, captured_at=1.0, processed_at=2.0, model_name="m", model_version="1",
        encoding="jpeg", bytes=10, width=4, height=2, aspect_ratio=2.0, brightness=10.0, blur=3.0,
        inference_ms=1.0, detections=0,
    )  # fmt: skip
    assert decode_record(FrameMetrics, encode_record(m)) == m
    a = Alert(
        alert_id="a", type="data_drift", camera_id="c", signal="blur", value=1.0, threshold=2.0, window=3,
        raised_at=4.0, message="m", evidence_frame_ids=["f"],
    )  # fmt: skip
    assert decode_record(Alert, encode_record(a)) == a


def test_records_reject_wrong_types_and_versions():
    with pytest.raises(ContractError) as err:
        decode_record(Prediction, b'{"schema_version": 1, "frame_id": 3}')
    assert err.value.reason == "bad_record"
    with pytest.raises(ContractError) as err:
        decode_record(Prediction, b'{"schema_version": 2}')
    assert err.value.reason == "unknown_schema_version"
    with pytest.raises(ContractError) as err:
        decode_record(Prediction, b"\xff\xfe")
    assert err.value.reason == "bad_json"


def test_dead_letter_keeps_the_original_payload_and_reason():
    err = ContractError("corrupt_image", "bad bytes")
    d = DeadLetter.of("frames", 2, 41, b"cam-1", b"\x00\x01payload", err)
    back = decode_record(DeadLetter, encode_record(d))
    assert back.payload() == b"\x00\x01payload"
    assert (back.reason, back.key, back.partition, back.offset) == ("corrupt_image", "cam-1", 2, 41)
