"""Hostile frames and hostile saved state through the worker's batch step (real detector, no Kafka): capture
times out of range are dead letters, a frame stamped ahead does not stop a camera's views, and a saved state
that cannot be read (a pickle, another version, wrong types) is logged and learned again, never run."""

from __future__ import annotations

import base64
import json
import logging
import pickle
import struct
import time

import numpy as np
import pytest

from core.contracts import FrameHeader, pack_frame
from core.settings import Settings
from models import load_detector
from streams.gateway import encode
from streams.process import FrameProcessor, RawMessage

DAY = 86_400.0


@pytest.fixture(scope="module")
def detector():
    return load_detector("nanodet-m", intra_op_threads=2)


@pytest.fixture
def processor(detector):
    p = FrameProcessor(Settings(_env_file=None, rule_warmup_frames=5, view_every_s=1.0), detector)
    yield p
    p.close()


def message(image: np.ndarray, seq: int, captured_at: float, arrived_at: float | None, offset: int = 0) -> RawMessage:
    h = FrameHeader(
        frame_id=f"cam-1:1:{seq}", camera_id="cam-1", seq=seq, captured_at=captured_at,
        width=image.shape[1], height=image.shape[0],
    )  # fmt: skip
    return RawMessage("frames", 0, offset, b"cam-1", pack_frame(h, encode(image, 90)), arrived_at)


def raw_message(fields: dict, image: bytes, offset: int) -> RawMessage:
    head = json.dumps(fields).encode()
    return RawMessage("frames", 0, offset, b"cam-1", b"CVF1" + struct.pack(">I", len(head)) + head + image, time.time())


def test_absurd_seq_and_capture_times_are_dead_letters_and_the_camera_goes_on(processor, street_frames):
    now = time.time()
    good = [message(street_frames[i], i, now - 10 + i, now - 10 + i + 0.1, offset=i) for i in range(3)]
    out = processor.process(good, {})
    states = dict(out.states)
    assert len(out.predictions) == 3 and "cam-1:1:2" in [v.frame_id for v in out.views if v.role == "latest"]

    fields = json.loads(FrameHeader(frame_id="cam-1:1:9", camera_id="cam-1", seq=9, captured_at=now, width=640,
                                    height=272).model_dump_json())  # fmt: skip
    image = encode(street_frames[3], 90)
    hostile = [
        raw_message(fields | {"seq": 2**70, "captured_at": 1e300}, image, offset=10),
        message(street_frames[4], 11, now + 2 * DAY, now + 2 * DAY, offset=11),  # ahead of the worker's clock
        message(street_frames[5], 12, now - 2 * DAY, now, offset=12),  # a day and more before its record
        message(street_frames[6], 13, now + 2 * DAY, now, offset=13),  # and after
    ]
    out = processor.process(hostile, states)
    assert out.predictions == []
    assert [(d.offset, d.reason) for d in out.dead_letters] == [
        (10, "bad_header"),
        (11, "capture_time_out_of_range"),
        (12, "capture_time_out_of_range"),
        (13, "capture_time_out_of_range"),
    ]
    assert all(d.payload() == m.value for d, m in zip(out.dead_letters, hostile, strict=True))

    # Within the bound, a frame stamped an hour ahead is kept (its camera's clock is a device fault's
    # business); the camera's views go on with the frames after it all the same.
    ahead = message(street_frames[7], 20, now + 3600, now + 3600.1, offset=20)
    later = [message(street_frames[8 + k], 21 + k, now + 5 + 2 * k, now + 5.1 + 2 * k, offset=21 + k) for k in range(3)]
    for seq, msg in zip(range(20, 24), [ahead, *later], strict=True):
        out = processor.process([msg], states)
        states.update(out.states)
        assert [v.frame_id for v in out.views if v.role == "latest"] == [f"cam-1:1:{seq}"]
    upstream = processor._monitors["cam-1"].upstream
    assert upstream.last_captured == now + 9  # the last frame's, not the one ahead
    assert processor._monitors["cam-1"].feed.last_arrival == pytest.approx(now + 9.1)


class _WritesAFile:
    """Unpickled, this would create ``path``."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def saved_state(processor: FrameProcessor, street_frames, n: int = 6) -> dict:
    now = time.time()
    out = processor.process([message(street_frames[i], i, now - 20 + i, now - 20 + i, offset=i) for i in range(n)], {})
    state = json.loads(json.dumps(out.states["cam-1"]))  # as the changelog gives it back
    processor.forget()
    return state


def frames_after(processor: FrameProcessor, state, street_frames) -> int:
    now = time.time()
    out = processor.process([message(street_frames[30], 30, now, now, offset=30)], {"cam-1": state})
    assert len(out.predictions) == 1
    return out.frames_seen["cam-1"]


def test_a_saved_state_round_trips(processor, street_frames):
    state = saved_state(processor, street_frames)
    assert state["version"] == 1 and state["kind"] == "camera"
    assert state["concept"]["adwin"]["state"]["rows"] is not None  # ADWIN's buckets as data
    assert frames_after(processor, state, street_frames) == 7


def test_a_pickle_in_a_saved_state_is_never_run_and_the_camera_learns_again(processor, street_frames, tmp_path, caplog):
    state = saved_state(processor, street_frames)
    marker = tmp_path / "ran"
    payload = base64.b64encode(pickle.dumps(_WritesAFile(marker))).decode()
    state["concept"]["adwin"]["state"] = payload  # where a pickle used to be read
    with caplog.at_level(logging.WARNING, logger="cvops.monitor"):
        assert frames_after(processor, state, street_frames) == 1  # started over
        assert frames_after(processor, state, street_frames) == 2  # the live monitor: no second load
    assert not marker.exists()
    warnings = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(warnings) == 1 and "cam-1" in warnings[0]


@pytest.mark.parametrize(
    "spoil",
    [
        lambda s: s.update(version=0),  # another version
        lambda s: s.pop("version"),  # saved before states had one
        lambda s: s.pop("feed"),  # a part missing
        lambda s: s.update(camera_id="cam-2"),  # another camera's
        lambda s: s["embedding"]["detector"].update(version=7),
        lambda s: s["distributions"].update(windows="rm -rf /"),
        lambda s: s["moved"].update(reference_png=base64.b64encode(b"\x89PNG not really").decode()),
    ],
)
def test_a_state_that_cannot_be_read_is_learned_again(processor, street_frames, spoil):
    state = saved_state(processor, street_frames)
    spoil(state)
    assert frames_after(processor, state, street_frames) == 1


@pytest.mark.parametrize("state", [[1, 2], "a string", 42, {"version": 1, "kind": "camera"}])
def test_a_state_of_the_wrong_shape_is_learned_again(processor, street_frames, state):
    assert frames_after(processor, state, street_frames) == 1


def test_a_state_that_reads_back_but_fails_on_the_first_frame_is_learned_again(processor, street_frames, caplog):
    state = saved_state(processor, street_frames)
    state["upstream"]["last_captured"] = "yesterday"  # not a number: from_dict takes it, the next frame fails
    with caplog.at_level(logging.WARNING, logger="cvops.worker"):
        assert frames_after(processor, state, street_frames) == 1
    assert any("fails on the first frame" in r.getMessage() for r in caplog.records)
